"""The presence socket's frames (the client frames it accepts; the updates and snapshots it
sends) and the SPEC's presence record, built from store transitions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from daarion_city.core.clock import from_epoch, iso
from daarion_city.core.validation import MAX_LAST_ACTIVE_MS, JsonLimits
from daarion_city.presence.model import Transition
from daarion_city.realtime.protocol import DEFAULT_LIMITS, Frame, Ping, encode, parse_frame


class Heartbeat(Frame):
    event: Literal["presence.heartbeat"]
    status: Literal["online", "away"] | None = None
    last_active_ago_ms: Annotated[int, Field(ge=0, le=MAX_LAST_ACTIVE_MS)] | None = None


PresenceClientFrame = Annotated[Heartbeat | Ping, Field(discriminator="event")]
_presence_frames: TypeAdapter[PresenceClientFrame] = TypeAdapter(PresenceClientFrame)
PRESENCE_EVENTS = frozenset({"presence.heartbeat", "ping"})


def parse_presence_frame(
    text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS
) -> PresenceClientFrame:
    frame: PresenceClientFrame = parse_frame(text, _presence_frames, PRESENCE_EVENTS, limits)
    return frame


def record(t: Transition) -> dict[str, Any]:
    """The SPEC's presence record."""
    return {
        "user_id": t.user_id,
        "name": t.name,
        "status": t.new,
        "last_seen": iso(from_epoch(t.last_seen)),
    }


def update_frame(t: Transition) -> str:
    return encode({"event": "presence.update", **record(t)})


def bulk_frame(users: list[Transition], connection_id: str | None = None) -> str:
    """``presence.bulk_update``: everyone not offline (with the socket's ``connection_id`` when
    it opens; without, after a bus outage)."""
    frame: dict[str, Any] = {"event": "presence.bulk_update", "users": [record(u) for u in users]}
    if connection_id is not None:
        frame["connection_id"] = connection_id
    return encode(frame)
