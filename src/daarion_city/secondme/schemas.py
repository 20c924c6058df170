"""The wire shapes of Second Me's answers (SPEC sections 5 and 5b)."""

from __future__ import annotations

from typing import Any

from daarion_city.core.clock import iso


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
