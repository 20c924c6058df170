"""``storage/rooms.py`` and ``storage/messages.py`` on SQLite and PostgreSQL: rooms, seqs,
messages (idempotent by ``client_msg_id``), the group commit's batches, pages both ways,
membership."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from daarion_city.storage import feed as feed_store
from daarion_city.storage import messages
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database
from tests.storage.conftest import event_row, new, now
from tests.support import relation_scans


async def a_room(db: Database, slug: str | None = None) -> str:
    room_id = new("room")
    async with db.begin() as conn:
        await store.insert_room(
            conn,
            room_id=room_id,
            slug=slug or room_id.replace("_", "-"),
            name="A room",
            description="",
            created_by="u_owner",
            created_at=now(),
        )
    return room_id


def message(
    room_id: str, body: str, author: str = "u_a", cmid: str | None = None
) -> dict[str, Any]:
    """A message row as the rooms' commit makes them (``seq`` set once reserved)."""
    return {
        "id": new("m"),
        "room_id": room_id,
        "seq": 0,
        "author_user_id": author,
        "author_agent_id": None,
        "username": author.upper(),
        "body": body,
        "client_msg_id": cmid,
        "created_at": now(),
        "reply_to_seq": None,
        "mentions": [],
    }


def batch(room_id: str, bodies: list[str], author: str = "u_a") -> messages.RoomBatch:
    rows = [message(room_id, body, author, cmid=f"c-{body}") for body in bodies]
    events = [event_row("room_message", room_id=room_id, user_id=author) for _ in rows]
    return room_id, rows, events


async def post(db: Database, room_id: str, bodies: list[str]) -> list[dict[str, Any]]:
    """Store messages the careful way (one transaction) and return their rows, seqs set."""
    b = batch(room_id, bodies)
    async with db.begin() as conn:
        await messages.insert_batches(conn, [b])
    return b[1]


async def test_rooms_by_id_or_slug_and_the_defaults(db: Database) -> None:
    room_id = await a_room(db, slug="my-room")
    async with db.begin() as conn:
        by_id, by_slug = (
            await store.find_room(conn, room_id),
            await store.find_room(conn, "my-room"),
        )
        assert by_id is not None
        assert by_slug is not None
        assert by_id.id == by_slug.id == room_id
        assert await store.find_room(conn, "no-such-room") is None
        assert await store.existing_slugs(conn, ["my-room", "nope"]) == {"my-room"}
        await store.set_default_rooms(conn, ["my-room"])
        room = await store.find_room(conn, room_id)
        assert room is not None
        assert room.is_default
        assert room.last_seq == 0
        await store.set_default_rooms(conn, [])
        room = await store.find_room(conn, room_id)
        assert room is not None
        assert not room.is_default


async def test_seqs_are_reserved_in_order_and_a_rollback_leaves_no_gap(db: Database) -> None:
    room_id = await a_room(db)
    async with db.begin() as conn:
        assert await messages.reserve_seqs(conn, room_id, 3) == (0, 0)
        assert await messages.reserve_seqs(conn, room_id, 2) == (3, 3)
    try:
        async with db.begin() as conn:
            await messages.reserve_seqs(conn, room_id, 10)
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    async with db.read() as conn:
        assert await messages.last_seq(conn, room_id) == 5
        assert await messages.last_seq(conn, "room_missing") == 0


async def test_a_message_is_stored_once_per_client_msg_id(db: Database) -> None:
    room_id = await a_room(db)
    first = [message(room_id, "hi", cmid="c1"), message(room_id, "no key", cmid=None)]
    again = [message(room_id, "hi again", cmid="c1"), message(room_id, "no key", cmid=None)]
    other = [message(room_id, "hi", author="u_b", cmid="c1")]  # the key is per author
    for n, rows in enumerate((first, again, other)):
        for i, row in enumerate(rows):
            row["seq"] = 10 * n + i + 1
    async with db.begin() as conn:
        assert await messages.insert_messages(conn, first) == {r["id"] for r in first}
        assert await messages.insert_messages(conn, again) == {again[1]["id"]}
        assert await messages.insert_messages(conn, other) == {other[0]["id"]}
        found = await messages.find_by_client_msg_ids(
            conn, room_id, [("u_a", "c1"), ("u_b", "c1"), ("u_a", "c-missing")]
        )
        assert set(found) == {("u_a", "c1"), ("u_b", "c1")}
        assert found[("u_a", "c1")].body == "hi"
        assert await messages.find_by_client_msg_ids(conn, room_id, []) == {}
        assert await messages.find_by_client_msg_ids(conn, "room_other", [("u_a", "c1")]) == {}


async def test_batches_of_several_rooms_in_one_transaction(db: Database) -> None:
    a, b = await a_room(db), await a_room(db)
    await post(db, a, ["before"])
    batches = [batch(a, ["a1", "a2"]), batch(b, ["b1"])]
    async with db.begin() as conn:
        answers = await messages.insert_batches(conn, batches)
    assert [r["seq"] for r in batches[0][1]] == [2, 3]
    assert [r["seq"] for r in batches[1][1]] == [1]
    positions = answers[0] + answers[1]
    assert [len(p) for p in answers] == [2, 1]
    assert positions == sorted(positions)
    async with db.read() as conn:
        assert (await messages.last_seq(conn, a), await messages.last_seq(conn, b)) == (3, 1)
        events = await feed_store.list_events(
            conn, limit=3, after_pos=positions[0] - 1, ascending=True
        )
        assert [e.id for e in events] == [e["id"] for _, _, es in batches for e in es]


async def test_a_batch_with_a_retry_is_refused_whole(db: Database) -> None:
    room_id = await a_room(db)
    stored = await post(db, room_id, ["one"])
    retry = batch(room_id, ["two", "one"])  # "one" again: the same client_msg_id
    with pytest.raises(messages.StoredAlready) as info:
        async with db.begin() as conn:
            await messages.insert_batches(conn, [retry])
    assert info.value.keys == {("u_a", "c-one")}
    async with db.read() as conn:
        assert await messages.last_seq(conn, room_id) == 1  # rolled back: no gap
        rows, _ = await messages.messages_page(conn, room_id)
        assert [r.id for r in rows] == [stored[0]["id"]]


async def test_batches_in_one_statement_on_postgresql(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's one-statement commit")
    a, b = await a_room(db), await a_room(db)
    await post(db, a, ["before"])
    batches = [batch(a, ["a1", "a2"]), batch("room_missing", ["x"]), batch(b, ["b1"])]
    answers = await messages.batch_commit(db)(batches)
    assert answers[1] is None  # no such room: nothing of it stored
    assert answers[0] is not None
    assert answers[2] is not None
    assert [r["seq"] for r in batches[0][1]] == [2, 3]
    assert [r["seq"] for r in batches[2][1]] == [1]
    assert len(answers[0]) == 2
    assert len(answers[2]) == 1
    retry = batch(a, ["new", "a1"])
    with pytest.raises(IntegrityError):
        await messages.batch_commit(db)([retry])
    async with db.read() as conn:
        assert await messages.last_seq(conn, a) == 3  # the statement was undone, seqs included
        rows, _ = await messages.messages_page(conn, a)
        assert [r.body for r in rows] == ["before", "a1", "a2"]


async def test_pages_before_and_after_a_seq(db: Database) -> None:
    room_id, empty = await a_room(db), await a_room(db)
    await post(db, room_id, [f"m{i}" for i in range(1, 11)])
    async with db.read() as conn:
        rows, more = await messages.messages_page(conn, room_id, limit=3)
        assert ([r.seq for r in rows], more) == ([8, 9, 10], True)  # the newest, oldest first
        rows, more = await messages.messages_page(conn, room_id, before_seq=8, limit=3)
        assert ([r.seq for r in rows], more) == ([5, 6, 7], True)
        rows, more = await messages.messages_page(conn, room_id, before_seq=3, limit=5)
        assert ([r.seq for r in rows], more) == ([1, 2], False)
        rows, more = await messages.messages_page(conn, room_id, after_seq=7, limit=5)
        assert ([r.seq for r in rows], more) == ([8, 9, 10], False)
        rows, more = await messages.messages_page(conn, room_id, after_seq=0, limit=4)
        assert ([r.seq for r in rows], more) == ([1, 2, 3, 4], True)
        rows, more = await messages.messages_page(conn, empty)
        assert (rows, more) == ([], False)


async def test_the_room_list_joins_each_room_s_newest_message(db: Database) -> None:
    """One statement: every room with its newest message (``lm_*`` columns), None without one;
    default rooms first in their configured order, then the newest rooms."""
    older, newer, empty = await a_room(db), await a_room(db), await a_room(db)
    await post(db, older, ["o1", "o2", "o3"])
    await post(db, newer, ["n1"])
    async with db.begin() as conn:
        slug = (await store.find_room(conn, older)).slug  # type: ignore[union-attr]
        await store.set_default_rooms(conn, [slug])
    async with db.read() as conn:
        rows = await store.list_rooms(conn, [slug], limit=500, offset=0)
    mine = [r for r in rows if r.id in {older, newer, empty}]
    assert [r.id for r in mine] == [older, empty, newer]  # the default first, then the newest
    last = {r.id: r for r in mine}
    assert (last[older].lm_seq, last[older].lm_body, last[older].lm_room_id) == (3, "o3", older)
    assert (last[newer].lm_seq, last[newer].lm_body) == (1, "n1")
    assert last[empty].lm_id is None
    assert last[older].last_seq == 3  # the room's own columns keep their names


async def test_a_room_comes_with_its_newest_messages_in_one_statement(db: Database) -> None:
    busy, empty = await a_room(db), await a_room(db)
    await post(db, busy, [f"m{i}" for i in range(1, 8)])
    async with db.read() as conn:
        rows = await store.room_with_newest(conn, busy, 5)
        assert [(r.id, r.lm_seq, r.lm_body) for r in rows] == [
            (busy, seq, f"m{seq}") for seq in range(3, 8)
        ]
        rows = await store.room_with_newest(conn, busy, 50)
        assert [r.lm_seq for r in rows] == list(range(1, 8))
        (row,) = await store.room_with_newest(conn, empty, 5)
        assert (row.id, row.lm_id) == (empty, None)
        assert await store.room_with_newest(conn, "room_city_nowhere", 5) == []


async def test_the_newest_messages_are_read_by_the_index(db: Database, backend: str) -> None:
    """The detail's statement reads only the newest messages of a long room, by the
    ``(room_id, seq)`` index (PostgreSQL's plan)."""
    if backend != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    room_id = await a_room(db)
    async with db.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username, body,"
            f" created_at) SELECT 'mx' || g, '{room_id}', g, 'u_a', 'A', 'b', now()"
            " FROM generate_series(1, 20000) g"
        )
        await conn.exec_driver_sql("ANALYZE city_room_messages")
    seen: list[tuple[str, Any]] = []
    async with db.read() as conn:
        event.listen(
            conn.sync_connection,
            "before_cursor_execute",
            lambda _c, _cur, sql, params, *_: seen.append((sql, params)),
        )
        rows = await store.room_with_newest(conn, room_id, 50)
        assert [r.lm_seq for r in rows] == list(range(19951, 20001))
        (sql, params), *_ = seen
        plan = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar()

    (scan,) = relation_scans(plan[0]["Plan"], "city_room_messages")
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
    assert scan["Scan Direction"] == "Backward", scan


async def test_membership_counts_each_member_once(db: Database) -> None:
    room_id = await a_room(db)
    async with db.begin() as conn:
        assert await store.add_member(conn, room_id, "u_a", "Alice", now())
        assert not await store.add_member(conn, room_id, "u_a", "Alice", now())
        assert await store.add_member(conn, room_id, "u_b", "Bob", now())
        assert not await store.remove_member(conn, room_id, "u_c")
        assert await store.remove_member(conn, room_id, "u_a")
        room = await store.find_room(conn, room_id)
        assert room is not None
        assert room.member_count == 1
