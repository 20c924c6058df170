"""Who has a room socket open right now: the source of ``room.join`` / ``room.leave``,
``members_online`` and ``online_members``.

A user is *in* a room while at least one of their sockets to it is open (several tabs count once).
``add`` answers whether this socket is the user's first in the room, ``remove`` whether it was the
last, so join and leave are announced once per user, not once per socket. With several instances
(Redis), an instance that dies without closing its sockets is noticed by the others within
``PRESENCE_TTL + PRESENCE_SWEEP_INTERVAL``: ``maintain`` removes its sockets and returns the users
that thereby left, for the caller to announce (exactly one instance gets each).

Guarantees every implementation keeps:

- ``add`` and ``remove`` are atomic per call (one Lua script in Redis): of the sockets a user
  opens to a room, exactly the first ``add`` answers True, and exactly the ``remove`` of the
  last one still open answers True; adding a socket twice, or removing an unknown one, answers
  False. ``add`` records the name it is given (the latest wins);
- ``members`` and ``counts`` count users, not sockets (``counts`` answers 0 for an empty room),
  and ``rooms_of`` lists a user's rooms sorted;
- nothing expires but an instance's liveness: in Redis ``maintain`` keeps the instance's alive
  key for the TTL (the presence TTL) and, once another instance's key has run out, exactly one
  caller claims that instance, removes its sockets and returns a :class:`Departure` for each
  user who thereby left a room (a user still connected through another instance stays). An
  instance that finds its own key gone writes its sockets again. In process ``maintain`` has
  nothing to do and returns ``[]``;
- Redis down: every call but ``close`` raises :class:`~daarion_city.core.errors.Unavailable`
  (a typed
  503); ``remove`` forgets the socket in process first, so a later restore does not bring it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Departure:
    room_id: str
    user_id: str
    name: str


class RoomOccupancy(Protocol):
    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> bool:
        """Record an open socket; True when it is the user's first in the room (a join)."""
        ...

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        """Forget a closed socket; True when it was the user's last in the room (a leave)."""
        ...

    async def members(self, room_id: str) -> dict[str, str]:
        """``user_id -> name`` of the users with a socket open to the room."""
        ...

    async def counts(self, room_ids: list[str]) -> dict[str, int]:
        """The number of users with a socket open to each of ``room_ids``."""
        ...

    async def rooms_of(self, user_id: str) -> list[str]:
        """The rooms the user has a socket open to."""
        ...

    async def maintain(self, now: float) -> list[Departure]:
        """Keep this instance marked alive; clear the sockets of instances that died."""
        ...

    async def close(self) -> None:
        """A clean stop (this instance's sockets are already removed): forget the instance."""
        ...
