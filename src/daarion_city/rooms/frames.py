"""The room socket's frames: the client frames it accepts, and the message frame it sends."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from daarion_city.core.validation import JsonLimits
from daarion_city.realtime.protocol import DEFAULT_LIMITS, Frame, Ping, encode, parse_frame
from daarion_city.rooms.schemas import ClientMsgId, MessageBody, ReplyToSeq


class MessageSend(Frame):
    event: Literal["room.message.send"]
    body: MessageBody
    client_msg_id: ClientMsgId | None = None
    reply_to_seq: ReplyToSeq | None = None


class Typing(Frame):
    event: Literal["room.typing"]
    typing: bool


class LegacyMembership(Frame):
    """``room.join`` / ``room.leave`` from old clients: accepted and ignored."""

    event: Literal["room.join", "room.leave"]


RoomClientFrame = Annotated[
    MessageSend | Typing | Ping | LegacyMembership, Field(discriminator="event")
]
_room_frames: TypeAdapter[RoomClientFrame] = TypeAdapter(RoomClientFrame)
ROOM_EVENTS = frozenset({"room.message.send", "room.typing", "ping", "room.join", "room.leave"})


def parse_room_frame(
    text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS
) -> RoomClientFrame:
    frame: RoomClientFrame = parse_frame(text, _room_frames, ROOM_EVENTS, limits)
    return frame


def message_frame(room_id: str, message: dict[str, Any]) -> str:
    return encode({"event": "room.message", "room_id": room_id, "message": message})


def timeline_frame(event: str, room_id: str, seq: int, message: dict[str, Any]) -> str:
    """``room.message.edit`` / ``room.message.delete``: the timeline ``seq`` and the whole
    message as it is after the change."""
    return encode({"event": event, "room_id": room_id, "seq": seq, "message": message})


def reaction_frame(
    room_id: str,
    seq: int,
    target_seq: int,
    user_id: str,
    emoji: str,
    op: str,
    reactions: list[dict[str, Any]],
) -> str:
    return encode(
        {
            "event": "room.reaction",
            "room_id": room_id,
            "seq": seq,
            "target_seq": target_seq,
            "user_id": user_id,
            "emoji": emoji,
            "op": op,
            "reactions": reactions,
        }
    )
