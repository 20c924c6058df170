"""Wire shape of a feed event."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from daarion_city.core.clock import iso

FeedKind = Literal["system", "room_created", "room_message", "member_joined", "member_left"]


class FeedEvent(BaseModel):
    id: str
    kind: str
    room_id: str | None
    user_id: str | None
    agent_id: str | None
    payload: dict[str, Any]
    created_at: str


def event_wire(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "room_id": row.room_id,
        "user_id": row.user_id,
        "agent_id": row.agent_id,
        "payload": row.payload,
        "created_at": iso(row.created_at),
    }
