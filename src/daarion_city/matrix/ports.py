"""What the rooms bridge needs of the city's rooms, as a Protocol: ``app/wiring.py`` passes the
rooms' own operations (``app/bridging.py``), so the Matrix domain never imports the rooms.

Each raises the city's typed errors as a city client would get them (a ban, a mute, slow mode,
a rate limit, a body too long or empty, a message that is not there): the bridge does not import
what the city refuses. ``Unavailable`` (the database) means "try again later"."""

from __future__ import annotations

from typing import Protocol

from daarion_city.identity.principal import Principal


class CityRooms(Protocol):
    async def post(
        self,
        user: Principal,
        room_id: str,
        body: str,
        client_msg_id: str,
        reply_to_seq: int | None,
    ) -> int:
        """Post (idempotent on ``client_msg_id``); the message's seq."""
        ...

    async def edit(self, user: Principal, room_id: str, seq: int, body: str) -> None: ...

    async def delete(self, user: Principal, room_id: str, seq: int) -> None: ...

    async def react(
        self, user: Principal, room_id: str, seq: int, emoji: str, *, add: bool
    ) -> None: ...

    async def changed(self, room_id: str) -> None:
        """The room's Matrix mapping was stored: what the city shows of the room is redrawn."""
        ...
