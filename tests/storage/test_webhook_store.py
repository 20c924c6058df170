"""``storage/webhooks.py`` on SQLite and PostgreSQL: outbox rows only with ``outbox``, in the
events' transaction; read in position order with the events as the feed shows them; failures
recorded; emptied by position; and migration 0010 up and down in place."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import command

from daarion_city.core.clock import as_utc
from daarion_city.storage import feed, webhooks
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import alembic_config, head_revision, migrate
from tests.storage.conftest import event_row, now


async def test_outbox_rows_come_with_their_events_only_when_asked(db: Database) -> None:
    async with db.begin() as conn:
        await feed.insert_events(conn, [event_row()])
        positions = await feed.insert_events(conn, [event_row(), event_row()], outbox=True)
    try:
        async with db.begin() as conn:
            await feed.insert_events(conn, [event_row()], outbox=True)
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    async with db.read() as conn:
        assert await webhooks.pending(conn) == 2
        rows = await webhooks.due(conn, 10)
    assert [r.o_pos for r in rows] == positions
    assert [r.attempts for r in rows] == [0, 0]
    assert rows[0].payload == {"n": 1}


async def test_failures_are_recorded_and_rows_forgotten_by_position(db: Database) -> None:
    async with db.begin() as conn:
        first, second, third = await feed.insert_events(
            conn, [event_row(), event_row(), event_row()], outbox=True
        )
        await conn.execute(sa.text("DELETE FROM city_feed_events WHERE pos = :p"), {"p": third})
    t0 = now()
    async with db.begin() as conn:
        await webhooks.failed(conn, first, t0, t0 + timedelta(seconds=1))
        await webhooks.failed(conn, first, t0 + timedelta(seconds=1), t0 + timedelta(seconds=3))
    async with db.read() as conn:
        head, _, gone = await webhooks.due(conn, 10)
    assert head.attempts == 2
    assert as_utc(head.first_attempt_at) == t0  # the first attempt's time stays
    assert as_utc(head.next_attempt_at) == t0 + timedelta(seconds=3)
    assert gone.id is None  # its event is gone: the sender forgets it
    async with db.begin() as conn:
        await webhooks.forget(conn, [second, third])
    async with db.read() as conn:
        assert [r.o_pos for r in await webhooks.due(conn, 10)] == [first]


async def test_the_outbox_migration_goes_down_and_up(db: Database) -> None:
    async with db.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0008"))
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert "city_webhook_outbox" not in tables
    assert await migrate(db) == head_revision()
    async with db.begin() as conn:
        await feed.insert_events(conn, [event_row()], outbox=True)
    async with db.read() as conn:
        assert await webhooks.pending(conn) == 1
