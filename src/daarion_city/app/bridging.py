"""The city's rooms as the Matrix rooms bridge sees them (``matrix/ports.CityRooms``): the
rooms' own operations, with a body checked as the HTTP routes check it, so what Matrix brings
in meets exactly the rules a city client meets."""

from __future__ import annotations

from pydantic import ValidationError

from daarion_city.core.errors import Unprocessable
from daarion_city.identity.principal import Principal
from daarion_city.rooms.schemas import MessageEdit
from daarion_city.rooms.service import RoomService


def _checked(body: str) -> str:
    try:
        return MessageEdit(body=body).body
    except ValidationError as exc:
        raise Unprocessable(
            f"the message is not one the city takes: {exc.errors()[0]['msg']}",
            code="invalid_body",
        ) from exc


class BridgedRooms:
    def __init__(self, rooms: RoomService) -> None:
        self.rooms = rooms

    async def post(
        self,
        user: Principal,
        room_id: str,
        body: str,
        client_msg_id: str,
        reply_to_seq: int | None,
    ) -> int:
        result = await self.rooms.commit.post(
            user, room_id, _checked(body), client_msg_id, reply_to_seq
        )
        return int(result.message["seq"])

    async def edit(self, user: Principal, room_id: str, seq: int, body: str) -> None:
        await self.rooms.timeline.edit_message(user, room_id, seq, _checked(body))

    async def delete(self, user: Principal, room_id: str, seq: int) -> None:
        await self.rooms.timeline.delete_message(user, room_id, seq)

    async def react(
        self, user: Principal, room_id: str, seq: int, emoji: str, *, add: bool
    ) -> None:
        await self.rooms.timeline.set_reaction(user, room_id, seq, emoji, add=add)

    async def changed(self, room_id: str) -> None:
        await self.rooms.room_changed(room_id)
