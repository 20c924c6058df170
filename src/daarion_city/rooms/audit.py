"""The audit log's entries (SPEC section 10): one per moderation action, written by the action's
own transaction."""

from __future__ import annotations

from typing import Any

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.ids import new_id
from daarion_city.identity.principal import Principal


def audit_row(
    room_id: str | None,
    action: str,
    actor: Principal,
    *,
    target_user_id: str | None = None,
    target_seq: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id("aud"),
        "room_id": room_id,
        "action": action,
        "actor_id": actor.user_id,
        "target_user_id": target_user_id,
        "target_seq": target_seq,
        "reason": reason,
        "details": details or {},
        "created_at": utcnow(),
    }


def audit_wire(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "action": row.action,
        "actor_id": row.actor_id,
        "target_user_id": row.target_user_id,
        "target_seq": row.target_seq,
        "reason": row.reason,
        "details": row.details,
        "created_at": iso(row.created_at),
    }
