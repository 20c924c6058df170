"""``storage/feed.py`` on SQLite and PostgreSQL: positions, pages both ways, kinds."""

from __future__ import annotations

from daarion_city.storage import feed as store
from daarion_city.storage.database import Database
from tests.storage.conftest import event_row


async def test_positions_follow_the_rows(db: Database) -> None:
    rows = [event_row(payload={"n": i}) for i in range(5)]
    async with db.begin() as conn:
        positions = await store.insert_events(conn, rows)
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    async with db.read() as conn:
        for row, pos in zip(rows, positions, strict=True):
            assert await store.position_of(conn, row["id"]) == pos
        assert await store.position_of(conn, "evt_missing") is None


async def test_pages_before_and_after_a_position(db: Database) -> None:
    rows = [event_row(payload={"n": i}) for i in range(6)]
    async with db.begin() as conn:
        pos = await store.insert_events(conn, rows)
    async with db.read() as conn:
        newest = await store.list_events(conn, limit=3, kind="test_event")
        assert [r.pos for r in newest] == pos[:2:-1]  # newest first
        before = await store.list_events(conn, limit=2, before_pos=pos[3], kind="test_event")
        assert [r.pos for r in before] == [pos[2], pos[1]]
        after = await store.list_events(conn, limit=10, after_pos=pos[3], ascending=True)
        assert [r.pos for r in after] == pos[4:]
        assert after[0].payload == {"n": 4}
        between = await store.list_events(
            conn, limit=10, after_pos=pos[0], before_pos=pos[3], ascending=True
        )
        assert [r.pos for r in between] == pos[1:3]


async def test_kinds_filter_and_a_rollback_stores_nothing(db: Database) -> None:
    async with db.begin() as conn:
        await store.insert_events(conn, [event_row("kind_a"), event_row("kind_b")])
    try:
        async with db.begin() as conn:
            await store.insert_events(conn, [event_row("kind_a")])
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    async with db.read() as conn:
        assert [r.kind for r in await store.list_events(conn, limit=10, kind="kind_a")] == [
            "kind_a"
        ]
        assert len(await store.list_events(conn, limit=10, kind="kind_b")) == 1
        assert await store.list_events(conn, limit=10, kind="kind_none") == []
