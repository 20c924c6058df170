"""SQL for reports of messages (SPEC section 10): filed, listed with their message as it is now,
and resolved once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.tables import reports, room_messages


async def find_open(
    conn: AsyncConnection, reporter_id: str, room_id: str, seq: int
) -> Row[tuple[object, ...]] | None:
    r = reports.c
    query = sa.select(reports).where(
        r.reporter_id == reporter_id, r.room_id == room_id, r.seq == seq, r.status == "open"
    )
    return (await conn.execute(query)).first()


async def insert_report(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(reports.insert().values(**row))


async def get_report(conn: AsyncConnection, report_id: str) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(sa.select(reports).where(reports.c.id == report_id))).first()


M_PREFIX = "m_"
_MESSAGE = [c.label(M_PREFIX + c.name) for c in room_messages.c]


async def list_reports(
    conn: AsyncConnection,
    *,
    status: str | None,
    room_id: str | None,
    visible_rooms: list[str] | None,
    reporter_id: str,
    limit: int,
) -> list[Row[tuple[object, ...]]]:
    """Newest first, each with its message as ``m_*`` columns: the reports of
    ``visible_rooms`` (None: every room) and those ``reporter_id`` filed."""
    r = reports.c
    scope = r.reporter_id == reporter_id
    if visible_rooms is None:
        scope = sa.true()
    elif visible_rooms:
        scope = sa.or_(scope, r.room_id.in_(visible_rooms))
    query = (
        sa.select(reports, *_MESSAGE)
        .select_from(
            reports.join(
                room_messages,
                sa.and_(room_messages.c.room_id == r.room_id, room_messages.c.seq == r.seq),
            )
        )
        .where(scope)
        .order_by(r.pos.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(r.status == status)
    if room_id is not None:
        query = query.where(r.room_id == room_id)
    return list((await conn.execute(query)).all())


async def resolve_report(
    conn: AsyncConnection, report_id: str, action: str, by: str, at: datetime
) -> bool:
    """Mark an open report resolved; False when it was resolved already."""
    r = reports.c
    result = await conn.execute(
        reports.update()
        .where(r.id == report_id, r.status == "open")
        .values(status="resolved", action=action, resolved_by=by, resolved_at=at)
    )
    return bool(result.rowcount)
