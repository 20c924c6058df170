"""Who may do what in a room (SPEC section 10 and 12): the one place that decides every power.

Ranks: member < moderator < owner < admin. An admin has every room power everywhere; a moderator
acts on members only, an owner on members and moderators. Acting on an equal or higher rank is
refused, and so is acting without the rank an action needs. Anyone may delete their own message;
deleting someone else's needs a higher rank than its author, and moderator rank at least.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from daarion_city.core.errors import Forbidden


class Rank(IntEnum):
    MEMBER = 0
    MODERATOR = 1
    OWNER = 2
    ADMIN = 3


class Power(StrEnum):
    UPDATE_ROOM = "room_updated"
    ADD_MODERATOR = "moderator_added"
    REMOVE_MODERATOR = "moderator_removed"
    BAN = "ban"
    UNBAN = "unban"
    MUTE = "mute"
    UNMUTE = "unmute"
    KICK = "kick"
    DELETE_MESSAGE = "message_deleted"
    SEE_MODERATION = "see_moderation"  # the bans, mutes, audit and reports of a room
    RESOLVE_REPORT = "report_resolved"
    SUSPEND = "suspend"
    UNSUSPEND = "unsuspend"


# The least rank each power needs.
NEEDS: dict[Power, Rank] = {
    Power.UPDATE_ROOM: Rank.MODERATOR,
    Power.ADD_MODERATOR: Rank.OWNER,
    Power.REMOVE_MODERATOR: Rank.OWNER,
    Power.BAN: Rank.MODERATOR,
    Power.UNBAN: Rank.MODERATOR,
    Power.MUTE: Rank.MODERATOR,
    Power.UNMUTE: Rank.MODERATOR,
    Power.KICK: Rank.MODERATOR,
    Power.DELETE_MESSAGE: Rank.MODERATOR,
    Power.SEE_MODERATION: Rank.MODERATOR,
    Power.RESOLVE_REPORT: Rank.MODERATOR,
    Power.SUSPEND: Rank.ADMIN,
    Power.UNSUSPEND: Rank.ADMIN,
}

# Powers that act on another user: the target's rank must be below the actor's.
ON_A_USER = frozenset(
    {
        Power.ADD_MODERATOR,
        Power.REMOVE_MODERATOR,
        Power.BAN,
        Power.UNBAN,
        Power.MUTE,
        Power.UNMUTE,
        Power.KICK,
        Power.DELETE_MESSAGE,
        Power.SUSPEND,
        Power.UNSUSPEND,
    }
)


def may(actor: Rank, power: Power, target: Rank | None = None) -> bool:
    """Whether a user of rank ``actor`` may use ``power`` (on a user of rank ``target``)."""
    if actor < NEEDS[power]:
        return False
    if power in ON_A_USER:
        return target is not None and target < actor
    return True


def check(actor: Rank, power: Power, target: Rank | None = None) -> None:
    """:func:`may`, or 403 ``forbidden``."""
    if may(actor, power, target):
        return
    if actor < NEEDS[power]:
        raise Forbidden(f"{power.value} needs the rank {NEEDS[power].name.lower()}")
    raise Forbidden(f"{power.value}: not on a user of your rank or higher")
