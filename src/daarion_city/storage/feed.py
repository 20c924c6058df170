"""SQL for city feed events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.tables import feed_events


async def insert_event(
    conn: AsyncConnection,
    *,
    event_id: str,
    kind: str,
    room_id: str | None,
    user_id: str | None,
    agent_id: str | None,
    payload: dict[str, Any],
    created_at: datetime,
) -> int:
    """Insert one event in the caller's transaction; returns its position (the ordering key)."""
    result = await conn.execute(
        feed_events.insert()
        .values(
            id=event_id,
            kind=kind,
            room_id=room_id,
            user_id=user_id,
            agent_id=agent_id,
            payload=payload,
            created_at=created_at,
        )
        .returning(feed_events.c.pos)
    )
    return int(result.scalar_one())


async def position_of(conn: AsyncConnection, event_id: str) -> int | None:
    result = await conn.execute(sa.select(feed_events.c.pos).where(feed_events.c.id == event_id))
    pos = result.scalar_one_or_none()
    return None if pos is None else int(pos)


async def list_events(
    conn: AsyncConnection,
    *,
    limit: int,
    before_pos: int | None = None,
    after_pos: int | None = None,
    kind: str | None = None,
    ascending: bool = False,
) -> list[Row[tuple[object, ...]]]:
    query = sa.select(feed_events)
    if before_pos is not None:
        query = query.where(feed_events.c.pos < before_pos)
    if after_pos is not None:
        query = query.where(feed_events.c.pos > after_pos)
    if kind is not None:
        query = query.where(feed_events.c.kind == kind)
    order = feed_events.c.pos.asc() if ascending else feed_events.c.pos.desc()
    return list((await conn.execute(query.order_by(order).limit(limit))).all())
