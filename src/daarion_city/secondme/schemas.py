"""The wire shapes of Second Me's answers (SPEC sections 5 and 5b)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from daarion_city.core.clock import iso
from daarion_city.identity.principal import Principal

CatchupSource = Callable[[Principal, str, int], Awaitable[dict[str, Any]]]
"""``(user, room id or slug, limit)`` -> ``{"room_id", "name", "messages"}``: the room's newest
``limit`` messages after the user's read marker, tombstones skipped, oldest first, each
``{"seq", "author", "body", "created_at"}`` (the rooms' ``Unread.since_marker``, passed in by
``app/wiring.py``)."""


def message_wire(row: Any) -> dict[str, Any]:
    """A turn as ``/secondme/history`` and ``/secondme/search`` list it; an answer's
    ``context`` says what its context held (``secondme/context.Built.chosen``)."""
    return {
        "id": row.id,
        "role": row.role,
        "content": row.content,
        "created_at": iso(row.created_at),
        "tokens_used": row.tokens_used,
        "latency_ms": row.latency_ms,
        "context": row.context,
    }
