"""WebSocket frames: every frame, both ways, is one JSON object with an ``event`` key.

Client frames are parsed into typed models here; anything else becomes a :class:`FrameError`
carrying the machine code the client gets in its ``error`` event. Server frames are encoded
once (``encode``) and the same text is written to every socket that receives it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from daarion_city.rooms.schemas import ClientMsgId, MessageBody
from daarion_city.validation import MAX_LAST_ACTIVE_MS, JsonLimits

DEFAULT_LIMITS = JsonLimits()


class FrameError(Exception):
    """A client frame that cannot be handled; the socket stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class MessageSend(_Frame):
    event: Literal["room.message.send"]
    body: MessageBody
    client_msg_id: ClientMsgId | None = None


class Typing(_Frame):
    event: Literal["room.typing"]
    typing: bool


class Ping(_Frame):
    event: Literal["ping"]


class LegacyMembership(_Frame):
    """``room.join`` / ``room.leave`` from old clients: accepted and ignored."""

    event: Literal["room.join", "room.leave"]


class Heartbeat(_Frame):
    event: Literal["presence.heartbeat"]
    status: Literal["online", "away"] | None = None
    last_active_ago_ms: Annotated[int, Field(ge=0, le=MAX_LAST_ACTIVE_MS)] | None = None


RoomClientFrame = Annotated[
    MessageSend | Typing | Ping | LegacyMembership, Field(discriminator="event")
]
_room_frames: TypeAdapter[RoomClientFrame] = TypeAdapter(RoomClientFrame)
ROOM_EVENTS = frozenset({"room.message.send", "room.typing", "ping", "room.join", "room.leave"})


def encode(frame: dict[str, Any]) -> str:
    """Serialise a server frame once; the text is shared by every recipient."""
    return orjson.dumps(frame).decode()


def error_frame(code: str, message: str) -> str:
    return encode({"event": "error", "code": code, "message": message})


PONG = encode({"event": "pong"})


def decode_object(text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse one frame into a JSON object with a string ``event``, or raise :class:`FrameError`."""
    if text is None:
        raise FrameError("invalid_frame", "binary frames are not supported; send JSON text")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError("invalid_json", "the frame is not valid JSON") from exc
    if not isinstance(data, dict):
        raise FrameError("invalid_frame", "a frame must be a JSON object")
    violation = limits.violation(data)
    if violation is not None:
        raise FrameError("invalid_frame", violation)
    event = data.get("event")
    if not isinstance(event, str):
        raise FrameError("invalid_frame", 'a frame needs a string "event"')
    return data


PresenceClientFrame = Annotated[Heartbeat | Ping, Field(discriminator="event")]
_presence_frames: TypeAdapter[PresenceClientFrame] = TypeAdapter(PresenceClientFrame)
PRESENCE_EVENTS = frozenset({"presence.heartbeat", "ping"})


def _parse(
    text: str | bytes | None,
    adapter: TypeAdapter[Any],
    events: frozenset[str],
    limits: JsonLimits,
) -> Any:
    data = decode_object(text, limits)
    if data["event"] not in events:
        raise FrameError("unknown_event", f"unknown event {str(data['event'])[:64]!r}")
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        raise FrameError("invalid_frame", f"{where}: {first['msg']}") from exc


def parse_room_frame(
    text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS
) -> RoomClientFrame:
    frame: RoomClientFrame = _parse(text, _room_frames, ROOM_EVENTS, limits)
    return frame


def parse_presence_frame(
    text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS
) -> PresenceClientFrame:
    frame: PresenceClientFrame = _parse(text, _presence_frames, PRESENCE_EVENTS, limits)
    return frame
