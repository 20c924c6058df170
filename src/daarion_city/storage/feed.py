"""SQL for city feed events."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage import webhooks
from daarion_city.storage.tables import feed_events, room_messages
from daarion_city.storage.webhooks import OUTBOX_CTE as OUTBOX_CTE  # for storage/messages.py

_INSERT = feed_events.insert().returning(feed_events.c.pos, sort_by_parameter_order=True)


async def insert_events(
    conn: AsyncConnection, rows: list[dict[str, Any]], *, outbox: bool = False
) -> list[int]:
    """Insert events in the caller's transaction; returns their positions (the ordering key),
    in the order of ``rows``. (The statement is built once, as the message path's are in
    storage/messages.py.) With ``outbox`` (webhooks on) their outbox rows too."""
    result = await conn.execute(_INSERT, rows)
    positions = [int(pos) for pos in result.scalars()]
    if outbox:
        await webhooks.add(conn, positions)
    return positions


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
    # A message's event stores its id only; its snippet is the message's text as it is now
    # (none once the message is deleted), joined by the message's primary key.
    message = sa.and_(
        feed_events.c.kind == "room_message",
        room_messages.c.id == feed_events.c.payload["message_id"].as_string(),
    )
    query = sa.select(
        feed_events,
        room_messages.c.body.label("m_body"),
        room_messages.c.deleted.label("m_deleted"),
    ).select_from(feed_events.outerjoin(room_messages, message))
    if before_pos is not None:
        query = query.where(feed_events.c.pos < before_pos)
    if after_pos is not None:
        query = query.where(feed_events.c.pos > after_pos)
    if kind is not None:
        query = query.where(feed_events.c.kind == kind)
    order = feed_events.c.pos.asc() if ascending else feed_events.c.pos.desc()
    return list((await conn.execute(query.order_by(order).limit(limit))).all())
