"""Who has a room socket open right now: the source of ``room.join`` / ``room.leave``,
``members_online`` and ``online_members``.

A user is *in* a room while at least one of their sockets to it is open (several tabs count once).
``add`` answers whether this socket is the user's first in the room, ``remove`` whether it was the
last, so join and leave are announced once per user, not once per socket. With several instances
(Redis), an instance that dies without closing its sockets is noticed by the others within
``PRESENCE_TTL + PRESENCE_SWEEP_INTERVAL``: ``maintain`` removes its sockets and returns the users
that thereby left, for the caller to announce (exactly one instance gets each).

Large rooms (SPEC 2b): each room also has a *mode*, decided by the same atomic calls with the
hysteresis of ``CITY_LARGE_ROOM`` (``large_room``, N): an ``add`` that takes a small room above N
users makes it large, a ``remove`` (or a dead instance's departure) that takes a large room below
3N/4 makes it small again; the call that does it answers ``crossed`` (exactly one call per
crossing, whichever instance makes it). Every instance reads the same mode and count, so a join
is announced per user or counted silently by one shared decision.

Guarantees every implementation keeps:

- ``add`` and ``remove`` are atomic per call (one Lua script in Redis, several calls sent
  together in one pipeline): of the sockets a user opens to a room, exactly the first ``add``
  answers ``changed``, and exactly the ``remove`` of the last one still open does; adding a
  socket twice, or removing an unknown one, does not. ``add`` records the name it is given (the
  latest wins) and makes the user the room's most recently active. Both answer the room's
  count and mode after the call (:class:`Occupied`);
- ``members``, ``roster`` and ``counts`` count users, not sockets (``counts`` answers 0 for an
  empty room); ``roster`` lists at most ``limit`` members, the most recently active first;
  ``rooms_of`` lists a user's rooms sorted;
- nothing expires but an instance's liveness: in Redis ``maintain`` keeps the instance's alive
  key for the TTL (the presence TTL) and, once another instance's key has run out, exactly one
  caller claims that instance, removes its sockets and returns a :class:`Departure` for each
  user who thereby left a room (a user still connected through another instance stays). An
  instance that finds its own key gone writes its sockets again. In process ``maintain`` has
  nothing to do and returns ``[]``;
- healing: an instance's own record of its sockets wins. A ``remove`` whose call failed (Redis
  timed out in a storm) is retried about every second until it succeeds, and ``maintain``
  compares the instance's entries in Redis with its record, removing any socket it no longer
  has (a failed or unanswered ``remove``, an ``add`` that failed after Redis ran it): the users
  they leave behind are returned as departures, so ``members_online`` and ``online_members``
  are right again within ``PRESENCE_SWEEP_INTERVAL`` at most;
- Redis down: every call but ``close`` raises :class:`~daarion_city.core.errors.Unavailable`
  (a typed 503); ``remove`` forgets the socket in process first, so a later restore does not
  bring it back, and its removal is retried as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Occupied:
    """What one ``add`` or ``remove`` did to its room."""

    changed: bool  # the user's first socket in the room opened (add) or their last closed
    online: int  # users online in the room after the call
    large: bool  # the room's mode after the call
    crossed: bool = False  # this call moved the room across the threshold (either way)


@dataclass(frozen=True, slots=True)
class Departure:
    """A user who left a room by a socket the occupancy removed itself (a dead instance's, or
    one whose removal failed before)."""

    room_id: str
    user_id: str
    name: str
    occupied: Occupied = field(default=Occupied(True, 0, False), compare=False)


@dataclass(frozen=True, slots=True)
class Crowd:
    """A room's count of online users and its mode."""

    online: int
    large: bool


@dataclass(frozen=True, slots=True)
class Roster:
    """A room's count and mode, and at most ``limit`` of its online members as
    ``(user_id, name)``, the most recently active first."""

    online: int
    large: bool
    members: list[tuple[str, str]]


def crosses(online: int, large: bool, threshold: int) -> bool | None:
    """The mode a room of ``online`` users should take from ``large`` (hysteresis: above
    ``threshold`` it becomes large, below 3/4 of it small again); None when it stays."""
    if not large and online > threshold:
        return True
    if large and online * 4 < threshold * 3:
        return False
    return None


class RoomOccupancy(Protocol):
    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> Occupied:
        """Record an open socket; ``changed`` when it is the user's first in the room."""
        ...

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> Occupied:
        """Forget a closed socket; ``changed`` when it was the user's last in the room."""
        ...

    async def members(self, room_id: str) -> dict[str, str]:
        """``user_id -> name`` of the users with a socket open to the room."""
        ...

    async def roster(self, room_id: str, limit: int) -> Roster:
        """The room's count, mode and most recently active members (at most ``limit``)."""
        ...

    async def counts(self, room_ids: list[str]) -> dict[str, int]:
        """The number of users with a socket open to each of ``room_ids``."""
        ...

    async def crowds(self, room_ids: list[str]) -> dict[str, Crowd]:
        """The count and mode of each of ``room_ids``."""
        ...

    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms the user has a socket open to."""
        ...

    async def heal(self) -> list[Departure]:
        """Retry the removals that failed (nothing to do when none did)."""
        ...

    async def maintain(self, now: float) -> list[Departure]:
        """Keep this instance marked alive; clear the sockets of instances that died and this
        instance's own sockets whose removal failed."""
        ...

    async def close(self) -> None:
        """A clean stop (this instance's sockets are already removed): forget the instance."""
        ...
