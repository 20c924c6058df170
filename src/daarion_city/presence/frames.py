"""The presence socket's frames and the SPEC's presence record, built from store transitions."""

from __future__ import annotations

from typing import Any

from daarion_city.clock import from_epoch, iso
from daarion_city.presence.model import Transition
from daarion_city.realtime.protocol import encode


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
