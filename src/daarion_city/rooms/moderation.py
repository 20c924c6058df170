"""Room moderation (SPEC section 10): the room's settings, its moderators, bans, mutes and kicks,
and its audit log.

Every action is checked by ``rooms/powers.py`` against the room's policy (``rooms/policy.py``),
written with its audit entry in one transaction, then announced: the room's policy is dropped on
every instance (``Policies.announce``), a ban or a kick closes the user's sockets of the room
with 4403 everywhere, and what the public reads show of the room is dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.errors import NotFound
from daarion_city.feed.service import FeedService, RecordedEvent
from daarion_city.identity.principal import Principal
from daarion_city.rooms.policy import Policies, RoomPolicy
from daarion_city.rooms.powers import Power, Rank, check
from daarion_city.storage import moderation as store
from daarion_city.storage import rooms as room_store
from daarion_city.storage.database import Database


def sanction_wire(room_id: str, row: Any) -> dict[str, Any]:
    """A ban or mute row (read, or the dict just written) as the API shows it."""
    if isinstance(row, dict):
        row = SimpleNamespace(**row)
    return {
        "room_id": room_id,
        "user_id": row.user_id,
        "by": row.by_user,
        "reason": row.reason,
        "created_at": iso(row.created_at),
        "expires_at": _iso_or_none(row.expires_at),
    }


def _iso_or_none(at: datetime | None) -> str | None:
    return None if at is None else iso(at)


Changed = Callable[[str], None]  # the room's public reads are dropped


class Moderation:
    def __init__(
        self,
        *,
        db: Database,
        feed: FeedService,
        policies: Policies,
        resolve: Callable[[str], Awaitable[str]],
        changed: Changed,
    ) -> None:
        self.db = db
        self.feed = feed
        self.policies = policies
        self._resolve = resolve
        self._changed = changed

    async def _room(self, ref: str) -> tuple[str, RoomPolicy]:
        room_id = await self._resolve(ref)
        return room_id, await self.policies.of(room_id)

    async def authorize(self, user: Principal, ref: str, power: Power) -> str:
        """The room's id once the user may use ``power`` there (on nobody in particular)."""
        room_id, policy = await self._room(ref)
        check(policy.rank(user), power)
        return room_id

    # --- the room ---------------------------------------------------------------------------
    async def update_room(
        self, user: Principal, ref: str, values: dict[str, Any]
    ) -> tuple[str, RecordedEvent | None]:
        """``PATCH`` a room's name, description or slow mode (moderators and up)."""
        room_id = await self.authorize(user, ref, Power.UPDATE_ROOM)
        if not values:
            return room_id, None
        async with self.db.begin() as conn:
            await store.update_room(conn, room_id, values)
            await store.insert_audit(
                conn, store.audit_row(room_id, "room_updated", user.user_id, details=values)
            )
            event = await self.feed.record(
                conn, "room_updated", room_id=room_id, user_id=user.user_id, payload=values
            )
        await self._announce(room_id)
        await self.feed.publish(event)
        return room_id, event

    async def moderators(self, ref: str) -> list[dict[str, str]]:
        room_id, policy = await self._room(ref)
        async with self.db.read() as conn:
            mods = await store.list_moderators(conn, room_id)
        listed = [{"user_id": policy.owner, "role": "owner"}] if policy.owner else []
        return listed + [{"user_id": m, "role": "moderator"} for m in mods]

    async def set_moderator(self, user: Principal, ref: str, target: str, *, add: bool) -> bool:
        room_id, policy = await self._room(ref)
        power = Power.ADD_MODERATOR if add else Power.REMOVE_MODERATOR
        target_rank = policy.rank_of(target)
        if add and target_rank == Rank.MODERATOR:
            check(policy.rank(user), power, Rank.MEMBER)  # allowed, and nothing to change
            return False
        check(policy.rank(user), power, target_rank)
        if not add and target_rank != Rank.MODERATOR:
            raise NotFound(f"{target} is no moderator here", code="not_a_moderator")
        async with self.db.begin() as conn:
            if add:
                changed = await store.add_moderator(conn, room_id, target, user.user_id, utcnow())
            else:
                changed = await store.remove_moderator(conn, room_id, target)
            if changed:
                await store.insert_audit(
                    conn, store.audit_row(room_id, power.value, user.user_id, target_user_id=target)
                )
        if changed:
            await self._announce(room_id)
        return changed

    # --- sanctions --------------------------------------------------------------------------
    async def sanction(
        self,
        user: Principal,
        ref: str,
        kind: str,
        target: str,
        *,
        duration_s: int | None,
        reason: str | None,
    ) -> dict[str, Any]:
        """A ban or a mute, until ``duration_s`` has passed (None: until lifted)."""
        room_id, policy = await self._room(ref)
        power = Power.BAN if kind == "ban" else Power.MUTE
        check(policy.rank(user), power, policy.rank_of(target))
        now = utcnow()
        row = {
            "room_id": room_id,
            "user_id": target,
            "kind": kind,
            "by_user": user.user_id,
            "reason": reason,
            "created_at": now,
            "expires_at": None if duration_s is None else now + timedelta(seconds=duration_s),
        }
        events: list[RecordedEvent] = []
        async with self.db.begin() as conn:
            await store.put_sanction(conn, row)
            details = {"duration_s": duration_s}
            await store.insert_audit(
                conn,
                store.audit_row(
                    room_id,
                    kind,
                    user.user_id,
                    target_user_id=target,
                    reason=reason,
                    details=details,
                ),
            )
            if kind == "ban":  # a ban ends the membership too, as Matrix's does
                events += await self._leave(conn, room_id, target)
        await self._announce(room_id, (target, "banned") if kind == "ban" else None)
        for event in events:
            await self.feed.publish(event)
        return sanction_wire(room_id, row)

    async def lift(self, user: Principal, ref: str, kind: str, target: str) -> bool:
        room_id, policy = await self._room(ref)
        power = Power.UNBAN if kind == "ban" else Power.UNMUTE
        check(policy.rank(user), power, policy.rank_of(target))
        async with self.db.begin() as conn:
            lifted = await store.lift_sanction(conn, room_id, target, kind, utcnow())
            if lifted:
                await store.insert_audit(
                    conn, store.audit_row(room_id, power.value, user.user_id, target_user_id=target)
                )
        if not lifted:
            raise NotFound(f"{target} is not {kind}ned here", code=f"not_{kind}ned")
        await self._announce(room_id)
        return lifted

    async def sanctions(self, user: Principal, ref: str, kind: str) -> list[dict[str, Any]]:
        room_id = await self.authorize(user, ref, Power.SEE_MODERATION)
        async with self.db.read() as conn:
            rows = await store.list_sanctions(conn, room_id, kind, utcnow())
        return [sanction_wire(room_id, row) for row in rows]

    async def kick(self, user: Principal, ref: str, target: str, reason: str | None) -> str:
        """End the user's membership and close their sockets of the room; they may come back."""
        room_id, policy = await self._room(ref)
        check(policy.rank(user), Power.KICK, policy.rank_of(target))
        async with self.db.begin() as conn:
            await store.insert_audit(
                conn,
                store.audit_row(
                    room_id, "kick", user.user_id, target_user_id=target, reason=reason
                ),
            )
            events = await self._leave(conn, room_id, target)
        await self._announce(room_id, (target, "kicked"))
        for event in events:
            await self.feed.publish(event)
        return room_id

    async def _leave(
        self, conn: AsyncConnection, room_id: str, user_id: str
    ) -> list[RecordedEvent]:
        name = await room_store.member_name(conn, room_id, user_id)
        if name is None or not await room_store.remove_member(conn, room_id, user_id):
            return []
        event = await self.feed.record(
            conn, "member_left", room_id=room_id, user_id=user_id, payload={"name": name}
        )
        return [event]

    # --- the audit log ----------------------------------------------------------------------
    async def audit(
        self, user: Principal, ref: str, *, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        room_id = await self.authorize(user, ref, Power.SEE_MODERATION)
        async with self.db.read() as conn:
            rows = await store.list_audit(conn, room_id, limit=limit, before=before)
        if rows is None:
            raise NotFound(f"no audit entry {before!r} in this room", code="audit_not_found")
        return [store.audit_wire(row) for row in rows]

    async def _announce(self, room_id: str, expel: tuple[str, str] | None = None) -> None:
        self._changed(room_id)
        await self.policies.announce(room_id, expel)
