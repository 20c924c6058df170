"""The presence socket's frames (the client frames it accepts; the updates and snapshots it
sends, with their models: ``/asyncapi.json`` is generated from them) and the SPEC's presence
record, built from store transitions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from daarion_city.core.clock import from_epoch, iso
from daarion_city.core.validation import MAX_LAST_ACTIVE_MS, JsonLimits
from daarion_city.presence.model import Transition
from daarion_city.realtime.protocol import (
    DEFAULT_LIMITS,
    Frame,
    Ping,
    ServerFrame,
    encode,
    parse_frame,
)


class Heartbeat(Frame):
    """Refreshes this connection's TTL and reports its state (recommended every
    ``PRESENCE_HEARTBEAT_INTERVAL``); no answer unless the status changes; at most
    ``PRESENCE_WRITE_RATE``/``_BURST`` per user on an instance, else ``error`` ``rate_limited``."""

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


class PresenceRecord(BaseModel):
    """The SPEC's presence record."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    name: str
    status: Literal["online", "away", "offline"]
    last_seen: str = Field(examples=["2026-12-02T04:39:13.673Z"])


class PresenceUpdate(ServerFrame, PresenceRecord):
    """A user's status changed (on every presence socket, the user's own included; on room
    sockets, for the users with a socket in the room)."""

    event: Literal["presence.update"]


class PresenceBulk(ServerFrame):
    """Everyone online or away: the first frame (with this socket's ``connection_id``, for
    ``POST /city/presence/offline``), and again without it after a bus outage."""

    event: Literal["presence.bulk_update"]
    users: list[PresenceRecord]
    connection_id: str | SkipJsonSchema[None] = None


PRESENCE_CLIENT_FRAMES: tuple[type[Frame], ...] = (Heartbeat, Ping)
PRESENCE_SERVER_FRAMES: tuple[type[ServerFrame], ...] = (PresenceBulk, PresenceUpdate)
# The presence socket's own error codes (besides the codec's, realtime/protocol.FRAME_ERRORS).
PRESENCE_ERRORS = {
    "rate_limited": "heartbeats over the user's bucket on this instance; retry_after",
    "suspended": "the account is suspended: before the 4403 close; expires_at",
}


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
