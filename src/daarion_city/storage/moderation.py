"""SQL for moderation (SPEC section 10): a room's policy (owner, moderators, slow mode, the bans
and mutes in force), the sanctions, the audit log and the suspensions. Reports are in
``storage/reports.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.ids import new_id
from daarion_city.storage.database import insert_for
from daarion_city.storage.tables import audit, room_moderators, room_sanctions, rooms, suspensions


@dataclass(frozen=True, slots=True)
class PolicyRows:
    owner: str | None
    slow_mode_s: int
    moderators: list[str]
    sanctions: list[tuple[str, str, datetime | None]]  # (kind, user_id, expires_at)


def _in_force(table: sa.Table, now: datetime) -> Any:
    return sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now)


async def policy_rows(conn: AsyncConnection, room_id: str, now: datetime) -> PolicyRows | None:
    """What a room's policy is made of, or None without the room (three index reads)."""
    room = (
        await conn.execute(
            sa.select(rooms.c.created_by, rooms.c.slow_mode_s).where(rooms.c.id == room_id)
        )
    ).first()
    if room is None:
        return None
    mods = await conn.execute(
        sa.select(room_moderators.c.user_id).where(room_moderators.c.room_id == room_id)
    )
    s = room_sanctions.c
    sanctions = await conn.execute(
        sa.select(s.kind, s.user_id, s.expires_at).where(
            s.room_id == room_id, _in_force(room_sanctions, now)
        )
    )
    return PolicyRows(
        room.created_by,
        int(room.slow_mode_s),
        list(mods.scalars()),
        [(r.kind, r.user_id, r.expires_at) for r in sanctions],
    )


async def update_room(conn: AsyncConnection, room_id: str, values: dict[str, Any]) -> None:
    await conn.execute(rooms.update().where(rooms.c.id == room_id).values(**values))


async def list_moderators(conn: AsyncConnection, room_id: str) -> list[str]:
    query = (
        sa.select(room_moderators.c.user_id)
        .where(room_moderators.c.room_id == room_id)
        .order_by(room_moderators.c.created_at, room_moderators.c.user_id)
    )
    return list((await conn.execute(query)).scalars())


async def add_moderator(
    conn: AsyncConnection, room_id: str, user_id: str, by: str, at: datetime
) -> bool:
    """True when the user was not a moderator of the room."""
    statement = (
        insert_for(conn.dialect.name)(room_moderators)
        .values(room_id=room_id, user_id=user_id, added_by=by, created_at=at)
        .on_conflict_do_nothing()
    )
    return bool((await conn.execute(statement)).rowcount)


async def remove_moderator(conn: AsyncConnection, room_id: str, user_id: str) -> bool:
    m = room_moderators.c
    result = await conn.execute(
        room_moderators.delete().where(m.room_id == room_id, m.user_id == user_id)
    )
    return bool(result.rowcount)


async def moderated_by(conn: AsyncConnection, user_id: str) -> list[str]:
    query = sa.select(room_moderators.c.room_id).where(room_moderators.c.user_id == user_id)
    return sorted((await conn.execute(query)).scalars())


# --- sanctions --------------------------------------------------------------------------------
async def put_sanction(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """A ban or a mute (a new one replaces the one in force: its reason and end)."""
    statement = insert_for(conn.dialect.name)(room_sanctions).values(**row)
    keep = ("by_user", "reason", "created_at", "expires_at")
    statement = statement.on_conflict_do_update(
        index_elements=[room_sanctions.c.room_id, room_sanctions.c.user_id, room_sanctions.c.kind],
        set_={k: statement.excluded[k] for k in keep},
    )
    await conn.execute(statement)


async def lift_sanction(
    conn: AsyncConnection, room_id: str, user_id: str, kind: str, now: datetime
) -> bool:
    """True when a sanction in force was lifted (an expired one is removed quietly)."""
    s = room_sanctions.c
    where = (s.room_id == room_id, s.user_id == user_id, s.kind == kind)
    in_force = (
        await conn.execute(sa.select(s.user_id).where(*where, _in_force(room_sanctions, now)))
    ).first()
    await conn.execute(room_sanctions.delete().where(*where))
    return in_force is not None


async def list_sanctions(
    conn: AsyncConnection, room_id: str, kind: str, now: datetime
) -> list[Row[tuple[object, ...]]]:
    s = room_sanctions.c
    query = (
        sa.select(room_sanctions)
        .where(s.room_id == room_id, s.kind == kind, _in_force(room_sanctions, now))
        .order_by(s.created_at, s.user_id)
    )
    return list((await conn.execute(query)).all())


# --- audit ------------------------------------------------------------------------------------
def audit_row(
    room_id: str | None,
    action: str,
    actor_id: str,
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
        "actor_id": actor_id,
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


async def insert_audit(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(audit.insert().values(**row))


async def list_audit(
    conn: AsyncConnection, room_id: str | None, *, limit: int, before: str | None
) -> list[Row[tuple[object, ...]]] | None:
    """Newest first: a room's entries, or (``room_id`` None) every entry of the city; None when
    ``before`` names no entry of that log."""
    a = audit.c
    scope = sa.true() if room_id is None else a.room_id == room_id
    query = sa.select(audit).where(scope).order_by(a.pos.desc()).limit(limit)
    if before is not None:
        pos = (
            await conn.execute(sa.select(a.pos).where(a.id == before, scope))
        ).scalar_one_or_none()
        if pos is None:
            return None
        query = query.where(a.pos < pos)
    return list((await conn.execute(query)).all())


# --- suspensions ------------------------------------------------------------------------------
async def put_suspension(conn: AsyncConnection, row: dict[str, Any]) -> None:
    statement = insert_for(conn.dialect.name)(suspensions).values(**row)
    keep = ("by_user", "reason", "created_at", "expires_at")
    statement = statement.on_conflict_do_update(
        index_elements=[suspensions.c.user_id], set_={k: statement.excluded[k] for k in keep}
    )
    await conn.execute(statement)


async def lift_suspension(conn: AsyncConnection, user_id: str, now: datetime) -> bool:
    c = suspensions.c
    in_force = (
        await conn.execute(
            sa.select(c.user_id).where(c.user_id == user_id, _in_force(suspensions, now))
        )
    ).first()
    await conn.execute(suspensions.delete().where(c.user_id == user_id))
    return in_force is not None


async def suspended(conn: AsyncConnection, now: datetime) -> dict[str, datetime | None]:
    """Every suspension in force: user id -> its end (None: until lifted)."""
    query = sa.select(suspensions.c.user_id, suspensions.c.expires_at).where(
        _in_force(suspensions, now)
    )
    return {r.user_id: r.expires_at for r in (await conn.execute(query)).all()}
