"""SQL for the webhooks' outbox (``tables_webhooks.py``): written with the feed events
(``storage/feed.insert_events``, and ``OUTBOX_CTE`` in the rooms' one-statement commit), read in
feed order with each event as the feed shows it, and emptied as events are delivered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.tables import feed_events, room_messages
from daarion_city.storage.tables_webhooks import webhook_outbox

# The sending instance of a cluster holds this PostgreSQL advisory lock ("whk1").
SENDER_LOCK = 0x77686B31

# A CTE for a PostgreSQL statement whose CTE ``events`` inserts feed events ``RETURNING pos``:
# their outbox rows in the same statement (storage/messages.py).
OUTBOX_CTE = """, outbox AS (
    INSERT INTO city_webhook_outbox (pos) SELECT pos FROM events
)
"""

_ADD = webhook_outbox.insert()


async def add(conn: AsyncConnection, positions: list[int]) -> None:
    """The outbox rows of events written in the caller's transaction."""
    if positions:
        await conn.execute(_ADD, [{"pos": pos} for pos in positions])


def _columns(o: Any, e: Any, m: Any) -> list[Any]:
    """A due row: its outbox columns (``o``), its feed event's (``e``), its message's (``m``)."""
    event = (e.id, e.kind, e.room_id, e.user_id, e.agent_id, e.payload, e.created_at)
    return [
        o.pos.label("o_pos"),
        o.attempts,
        o.first_attempt_at,
        o.next_attempt_at,
        *event,
        m.body.label("m_body"),
        m.deleted.label("m_deleted"),
    ]


def _due() -> sa.Select[Any]:
    o = webhook_outbox.c
    # A message's event shows its snippet as the message is now, as GET /city/feed does.
    message = sa.and_(
        feed_events.c.kind == "room_message",
        room_messages.c.id == feed_events.c.payload["message_id"].as_string(),
    )
    return (
        sa.select(*_columns(webhook_outbox.c, feed_events.c, room_messages.c))
        .select_from(
            webhook_outbox.outerjoin(feed_events, feed_events.c.pos == o.pos).outerjoin(
                room_messages, message
            )
        )
        .order_by(o.pos)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


def _due_pg() -> sa.Select[Any]:
    """The same on PostgreSQL, its head of the outbox first and then each row's event and
    message by one index lookup each (LATERAL subqueries, kept apart from the joins by their
    OFFSET): the outbox is small and its statistics say so, and the joins of ``_due`` were
    planned as scans of the whole events table (40% of a core, sampled, while 50 clients
    posted with deliveries running; bench/RESULTS.md, issue 25)."""
    o = webhook_outbox.c
    head = (
        sa.select(webhook_outbox)
        .order_by(o.pos)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .subquery("head")
    )
    f = feed_events.c
    event = sa.select(feed_events).where(f.pos == head.c.pos).offset(0).lateral("e")
    m = room_messages.c
    message = (
        sa.select(m.body, m.deleted)
        .where(event.c.kind == "room_message", m.id == event.c.payload["message_id"].as_string())
        .offset(0)
        .lateral("m")
    )
    return (
        sa.select(*_columns(head.c, event.c, message.c))
        .select_from(head.outerjoin(event, sa.true()).outerjoin(message, sa.true()))
        .order_by(head.c.pos)
    )


_DUE = {False: _due(), True: _due_pg()}


async def due(conn: AsyncConnection, limit: int) -> list[Row[Any]]:
    """The first ``limit`` events of the outbox in feed order (``o_pos``), each with its feed
    event's columns (``id`` None when the event is gone) and its message's (``m_body``,
    ``m_deleted``)."""
    query = _DUE[conn.dialect.name == "postgresql"]
    return list((await conn.execute(query, {"limit": limit})).all())


async def forget(conn: AsyncConnection, positions: list[int]) -> None:
    """Delivered or given up: out of the outbox (by position: a lower one committed late may
    still be waiting)."""
    if positions:
        await conn.execute(webhook_outbox.delete().where(webhook_outbox.c.pos.in_(positions)))


async def failed(conn: AsyncConnection, pos: int, at: datetime, retry_at: datetime) -> None:
    """An attempt at ``at`` failed: counted, and the next one is at ``retry_at``."""
    o = webhook_outbox.c
    await conn.execute(
        webhook_outbox.update()
        .where(o.pos == pos)
        .values(
            attempts=o.attempts + 1,
            first_attempt_at=sa.func.coalesce(
                o.first_attempt_at, sa.bindparam("at", at, type_=o.first_attempt_at.type)
            ),
            next_attempt_at=retry_at,
        )
    )


async def pending(conn: AsyncConnection) -> int:
    """Events waiting in the outbox."""
    return int(
        (await conn.execute(sa.select(sa.func.count()).select_from(webhook_outbox))).scalar_one()
    )


async def try_lock(conn: AsyncConnection) -> bool:
    """Take the sender's session lock on this connection (PostgreSQL), if nobody holds it."""
    lock = sa.text("SELECT pg_try_advisory_lock(:key)")
    return bool((await conn.execute(lock, {"key": SENDER_LOCK})).scalar())


async def unlock(conn: AsyncConnection) -> None:
    """Let the lock go (a pooled connection would keep it)."""
    await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SENDER_LOCK})
