"""WebSocket frames: every frame, both ways, is one JSON object with an ``event`` key.

The generic codec; each domain declares its client frames (``rooms/frames.py``,
``presence/frames.py``) and parses them into typed models with ``parse_frame``; anything else
becomes a :class:`FrameError` carrying the machine code the client gets in its ``error`` event.
Server frames are encoded once (``encode``) and the same text is written to every socket that
receives it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.json_schema import SkipJsonSchema

from daarion_city.core.validation import JsonLimits

DEFAULT_LIMITS = JsonLimits()


class FrameError(Exception):
    """A client frame that cannot be handled; the socket stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Frame(BaseModel):
    """A client frame's model: unknown keys ignored, no type coercion."""

    model_config = ConfigDict(extra="ignore", strict=True)


class Ping(Frame):
    """Asks for a ``pong`` (a keep-alive a client can time)."""

    event: Literal["ping"]


class Auth(Frame):
    """Only as the first frame of a socket opened without ``?token=`` (then within
    ``CITY_WS_AUTH_TIMEOUT``); it gets no answer of its own (``realtime/endpoint.py``)."""

    event: Literal["auth"]
    token: str


class ServerFrame(BaseModel):
    """A server frame's model: the keys it carries, no other (the frames themselves are built
    as dicts and encoded once; ``/asyncapi.json`` is generated from these models, and the tests
    validate every frame the sockets send against it)."""

    model_config = ConfigDict(extra="forbid")


class Pong(ServerFrame):
    """The answer to ``ping``."""

    event: Literal["pong"]


class ErrorFrame(ServerFrame):
    """A frame that could not be handled (the socket stays open), or why the socket closes
    (4403: ``banned``, ``kicked``, ``suspended``; 1011: a store that failed)."""

    event: Literal["error"]
    code: str = Field(description="one of the socket's codes (its error message lists them)")
    message: str = Field(description="for humans")
    client_msg_id: str | SkipJsonSchema[None] = Field(
        None, description="a failed room.message.send's, when it carried one"
    )
    retry_after: float | SkipJsonSchema[None] = Field(
        None, description="rate_limited, slow_mode: seconds to wait"
    )
    expires_at: str | None = Field(
        None, description="banned, muted, suspended: the sanction's end (null: until lifted)"
    )


# The error codes of the codec itself, on both sockets (each domain lists its own beside its
# frames); /asyncapi.json enumerates them with these meanings.
FRAME_ERRORS = {
    "invalid_json": "the frame is not JSON",
    "invalid_frame": "not an object, no string event, a binary frame, over the JSON caps, or a "
    "field of the wrong type or length (message names the field)",
    "unknown_event": "an event the socket does not take",
    "unauthorized": "the account was erased (DELETE /city/me): before the 4401 close; every "
    "token of it is refused from then on",
    "unavailable": "a store did not answer (room sends carry client_msg_id); before a 1011 "
    "close when it failed while the socket opened",
}


def encode(frame: dict[str, Any]) -> str:
    """Serialise a server frame once; the text is shared by every recipient."""
    return orjson.dumps(frame).decode()


def error_frame(code: str, message: str) -> str:
    return encode({"event": "error", "code": code, "message": message})


PONG = Pong(event="pong").model_dump_json()


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


def parse_frame(
    text: str | bytes | None,
    adapter: TypeAdapter[Any],
    events: frozenset[str],
    limits: JsonLimits,
) -> Any:
    """One frame of ``events`` validated by ``adapter`` (a domain's union of frame models)."""
    data = decode_object(text, limits)
    if data["event"] not in events:
        raise FrameError("unknown_event", f"unknown event {str(data['event'])[:64]!r}")
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        raise FrameError("invalid_frame", f"{where}: {first['msg']}") from exc
