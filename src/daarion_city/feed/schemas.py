"""Wire shape of a feed event."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from daarion_city.core.clock import iso

FeedKind = Literal[
    "system", "room_created", "room_message", "message_deleted", "member_joined", "member_left"
]
SNIPPET_CHARS = 100


class FeedEvent(BaseModel):
    id: str
    kind: str
    room_id: str | None
    user_id: str | None
    agent_id: str | None
    payload: dict[str, Any]
    created_at: str


def event_wire(row: Any) -> dict[str, Any]:
    """An event row as the SPEC's Event. A ``room_message`` read with its message joined
    (``m_body``, ``m_deleted``: ``storage/feed.list_events``) shows the message's snippet as it
    is now, and none once it is deleted."""
    payload = row.payload
    if row.kind == "room_message" and hasattr(row, "m_body"):
        payload = message_payload(payload["message_id"], row.m_body, bool(row.m_deleted))
    return {
        "id": row.id,
        "kind": row.kind,
        "room_id": row.room_id,
        "user_id": row.user_id,
        "agent_id": row.agent_id,
        "payload": payload,
        "created_at": iso(row.created_at),
    }


def message_payload(message_id: str, body: str | None, deleted: bool) -> dict[str, Any]:
    """A ``room_message`` event's payload as shown: the id, and the first 100 characters of
    the message while it is there."""
    if body is None or deleted:
        return {"message_id": message_id}
    return {"message_id": message_id, "snippet": body[:SNIPPET_CHARS]}
