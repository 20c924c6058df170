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
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

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
    event: Literal["ping"]


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
