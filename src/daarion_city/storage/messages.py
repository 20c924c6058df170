"""SQL for room messages: the seq reservation, the commit of batches of posts, the idempotency
lookup and the pages (one query layer for SQLite and PostgreSQL, the commit chosen once per
database by ``batch_commit``)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage import feed as feed_store
from daarion_city.storage import unread as unread_store
from daarion_city.storage.database import Database, insert_for
from daarion_city.storage.tables import room_messages, rooms

# The statements of the message path are built once: building one per call (and deriving its
# cache key) cost about 300 µs of CPU more than executing it (bench/RESULTS.md).
_RESERVE = (
    rooms.update()
    .where(rooms.c.id == sa.bindparam("room"))
    .values(
        last_seq=rooms.c.last_seq + sa.bindparam("count"),
        last_message_seq=rooms.c.last_seq + sa.bindparam("count"),
        message_count=rooms.c.message_count + sa.bindparam("count"),
    )
    .returning(rooms.c.last_seq, rooms.c.message_count)
)
_LAST_SEQ = sa.select(rooms.c.last_seq).where(rooms.c.id == sa.bindparam("room"))


async def reserve_seqs(conn: AsyncConnection, room_id: str, count: int) -> tuple[int, int]:
    """Take the room's next ``count`` seqs for as many new messages, and return the seq and the
    message count before them: one statement that also locks the room's row until commit, so
    posts to one room commit one transaction at a time, in ``seq`` order, and a rollback
    leaves no gap."""
    result = await conn.execute(_RESERVE, {"room": room_id, "count": count})
    last, messages = result.one()
    return int(last) - count, int(messages) - count


async def last_seq(conn: AsyncConnection, room_id: str) -> int:
    result = await conn.execute(_LAST_SEQ, {"room": room_id})
    return int(result.scalar_one_or_none() or 0)


@functools.cache
def _insert_messages(dialect: str) -> sa.Insert:
    cols = room_messages.c
    key = [cols.room_id, cols.author_user_id, cols.client_msg_id]
    # PostgreSQL's idempotency index is partial (migration 0006): the conflict target says so.
    where = cols.client_msg_id.isnot(None) if dialect == "postgresql" else None
    statement: sa.Insert = (
        insert_for(dialect)(room_messages)
        .on_conflict_do_nothing(index_elements=key, index_where=where)
        .returning(cols.id)
    )
    return statement


async def insert_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert messages (rows keyed by column name) in one statement, skipping any whose
    ``(room_id, author_user_id, client_msg_id)`` is stored already; returns the ids inserted.

    The skip is the unique index's own probe, one per row, whatever the room's size: this is how
    a post finds out it is a retry without a lookup beforehand."""
    statement = _insert_messages(conn.dialect.name)
    return set((await conn.execute(statement, rows)).scalars())


# PostgreSQL, the common commit: the new messages of one room or several (their batches that
# became ready together) and their feed events in one statement outside any transaction, so one
# round trip instead of five per room (BEGIN, the seq reservation, two inserts, COMMIT). Each
# room's seqs are reserved under its row lock, as reserve_seqs does, the rooms locked in id order
# so that two such statements (of two instances) cannot deadlock; the messages are numbered per
# room in their order, the feed events positioned in the order of the rows. A statement is
# atomic by itself: a retry among the messages (a unique violation) undoes all of it, seqs
# included. Each author's read marker moves to their newest message (SPEC 9: posting reads the
# room up to one's own message). With webhooks on, the events' outbox rows too ({outbox}).
_INSERT_BATCHES_PG = """
WITH batch AS (
    SELECT * FROM unnest(
        $1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::text[], $6::varchar[],
        $7::varchar[], $8::json[], $9::timestamptz[], $10::timestamptz[], $12::bigint[],
        $13::json[]
    ) WITH ORDINALITY AS b(
        room, id, author, name, body, cmid, event_id, payload, at, event_at, reply, mentions, ord
    )
), counts AS (
    SELECT room, count(*) AS n FROM batch GROUP BY room
), locked AS MATERIALIZED (
    SELECT r.id FROM city_rooms r WHERE r.id IN (SELECT room FROM counts) ORDER BY r.id FOR UPDATE
), rooms AS (
    UPDATE city_rooms r SET last_seq = r.last_seq + c.n, last_message_seq = r.last_seq + c.n,
        message_count = r.message_count + c.n
    FROM counts c, locked l
    WHERE r.id = c.room AND l.id = c.room
    RETURNING r.id, r.last_seq - c.n AS base, r.message_count - c.n AS ordinal_base
), numbered AS (
    SELECT b.*, row_number() OVER (PARTITION BY b.room ORDER BY b.ord) AS k, rooms.base,
        rooms.ordinal_base
    FROM batch b JOIN rooms ON rooms.id = b.room
), messages AS (
    INSERT INTO city_room_messages
        (id, room_id, seq, author_user_id, username, body, client_msg_id, created_at,
         reply_to_seq, mentions, ordinal)
    SELECT id, room, base + k, author, name, body, cmid, at, reply, mentions, ordinal_base + k
    FROM numbered
), markers AS (
    INSERT INTO city_read_markers (user_id, room_id, last_read_seq)
    SELECT author, room, max(base + k) FROM numbered WHERE author IS NOT NULL
    GROUP BY author, room
    ON CONFLICT (user_id, room_id) DO UPDATE SET last_read_seq =
        GREATEST(city_read_markers.last_read_seq, EXCLUDED.last_read_seq)
), events AS (
    INSERT INTO city_feed_events (id, kind, room_id, user_id, payload, created_at)
    SELECT event_id, $11, room, author, payload, event_at FROM numbered ORDER BY ord
    RETURNING id, pos
){outbox}
SELECT (SELECT array_agg(id) FROM rooms) AS room_ids,
       (SELECT array_agg(base) FROM rooms) AS bases,
       (SELECT array_agg(ordinal_base) FROM rooms) AS ordinal_bases,
       (SELECT array_agg(id) FROM events) AS ids,
       (SELECT array_agg(pos) FROM events) AS positions
"""
_BATCHES_PG = {on: _INSERT_BATCHES_PG.format(outbox=feed_store.OUTBOX_CTE * on) for on in (0, 1)}
RoomBatch = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]
"""``(room_id, rows, events)``: new messages of users (keyed by column name, without seqs)
and their feed events (``events[i]`` for ``rows[i]``)."""

BatchCommit = Callable[[list[RoomBatch]], Awaitable[Sequence[list[int] | None]]]
"""Stores the batches of one or more rooms (each room once) together, all of them or none
(``_commit_pg``, ``insert_batches``): the rooms' batches that became ready together."""


def batch_commit(db: Database, *, outbox: bool = False) -> BatchCommit:
    """This database's commit of the rooms' batches ready together, chosen once from its dialect
    (as mautrix's ``async_db`` picks its implementation by the URL's scheme): one statement on
    asyncpg's own connection on PostgreSQL (``Database.driver``), one transaction on SQLite
    (it holds the database's one writer lock)."""
    if db.is_sqlite:
        return functools.partial(_commit_sqlite, db, outbox)
    return functools.partial(_commit_pg, db, _BATCHES_PG[outbox])


async def _commit_sqlite(db: Database, outbox: bool, batches: list[RoomBatch]) -> list[list[int]]:
    async with db.begin() as conn:
        return await insert_batches(conn, batches, outbox=outbox)


async def _commit_pg(db: Database, sql: str, batches: list[RoomBatch]) -> list[list[int] | None]:
    """Store the batches of one or more rooms (each room once) in one statement on asyncpg's
    connection (``Database.driver``): all of them, or with ``IntegrityError`` (a retry of a
    stored message) or any other error none. Sets each row's ``seq``; returns each batch's
    event positions, or None for a room that does not exist (nothing of it stored)."""
    rows = [
        (room_id, row, event)
        for room_id, rs, es in batches
        for row, event in zip(rs, es, strict=True)
    ]
    params = (
        [room_id for room_id, _, _ in rows],
        [row["id"] for _, row, _ in rows],
        [row["author_user_id"] for _, row, _ in rows],
        [row["username"] for _, row, _ in rows],
        [row["body"] for _, row, _ in rows],
        [row["client_msg_id"] for _, row, _ in rows],
        [event["id"] for _, _, event in rows],
        [orjson.dumps(event["payload"]).decode() for _, _, event in rows],
        [row["created_at"] for _, row, _ in rows],
        [event["created_at"] for _, _, event in rows],
        batches[0][2][0]["kind"],
        [row["reply_to_seq"] for _, row, _ in rows],
        [orjson.dumps(row["mentions"]).decode() for _, row, _ in rows],
    )
    async with db.driver() as conn:
        out = await conn.fetchrow(sql, *params)
    base_of = dict(zip(out["room_ids"] or [], out["bases"] or [], strict=True))
    ordinal_of = dict(zip(out["room_ids"] or [], out["ordinal_bases"] or [], strict=True))
    position_of = dict(zip(out["ids"] or [], out["positions"] or [], strict=True))
    answers: list[list[int] | None] = []
    for room_id, rs, es in batches:
        if room_id not in base_of:
            answers.append(None)
            continue
        for offset, row in enumerate(rs, start=1):
            row["seq"] = int(base_of[room_id]) + offset
            row["ordinal"] = int(ordinal_of[room_id]) + offset
        answers.append([int(position_of[event["id"]]) for event in es])
    return answers


class StoredAlready(Exception):
    """Some messages of a batch were retries of messages stored earlier (their
    ``(author_user_id, client_msg_id)`` keys): nothing of the batch is kept."""

    def __init__(self, keys: set[tuple[str, str]]) -> None:
        super().__init__(f"{len(keys)} already stored")
        self.keys = keys


async def insert_batches(
    conn: AsyncConnection, batches: list[RoomBatch], *, outbox: bool = False
) -> list[list[int]]:
    """Store the batches of one or more rooms (each room once) in the caller's transaction, one
    room after the other: its seqs reserved under its lock (``reserve_seqs``), its messages,
    then all the rooms' feed events in one statement (and their outbox rows with ``outbox``).
    SQLite's commit of the rooms ready together (a transaction holds the database's one writer
    lock), and either store's careful path; the authors' read markers move to their messages.
    Sets each row's ``seq``; returns each batch's event positions. Raises :class:`StoredAlready`
    when messages were retries (the caller rolls back)."""
    for room_id, rows, _ in batches:
        base, ordinal = await reserve_seqs(conn, room_id, len(rows))
        for offset, row in enumerate(rows, start=1):
            row["seq"] = base + offset
            row["ordinal"] = ordinal + offset
        inserted = await insert_messages(conn, rows)
        if len(inserted) < len(rows):
            raise StoredAlready(
                {(r["author_user_id"], r["client_msg_id"]) for r in rows if r["id"] not in inserted}
            )
        await unread_store.advance_markers(
            conn,
            [(r["author_user_id"], room_id, r["seq"]) for r in rows if r["author_user_id"]],
        )
    flat = [e for _, _, es in batches for e in es]
    positions = await feed_store.insert_events(conn, flat, outbox=outbox)
    answers: list[list[int]] = []
    for _, _, events in batches:
        answers.append(positions[: len(events)])
        del positions[: len(events)]
    return answers


async def find_by_client_msg_ids(
    conn: AsyncConnection, room_id: str, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], Row[tuple[object, ...]]]:
    """Stored messages of ``(author_user_id, client_msg_id)`` pairs in the room.

    One arm per pair, each an equality on the whole unique key, so every arm is one index probe
    in any plan. (A single ``(author, client_msg_id) IN (...)`` got a cached generic plan from
    PostgreSQL that scanned every message of the room: 0.6 s per commit at 560,000.)"""
    if not keys:
        return {}
    cols = room_messages.c
    arms = [
        sa.select(room_messages).where(
            cols.room_id == room_id, cols.author_user_id == author, cols.client_msg_id == cmid
        )
        for author, cmid in keys
    ]
    query = arms[0] if len(arms) == 1 else sa.union_all(*arms)
    result = await conn.execute(query)
    return {(str(r.author_user_id), str(r.client_msg_id)): r for r in result.all()}


_EXISTS = sa.select(room_messages.c.seq).where(
    room_messages.c.room_id == sa.bindparam("room"), room_messages.c.seq == sa.bindparam("seq")
)


async def message_exists(conn: AsyncConnection, room_id: str, seq: int) -> bool:
    """Whether the room has a message created at ``seq`` (deleted ones included)."""
    return (await conn.execute(_EXISTS, {"room": room_id, "seq": seq})).first() is not None


@functools.cache
def _page(before: bool, after: bool) -> sa.Select[Any]:
    """The page query of each shape; ``room``, ``before``, ``after`` and ``limit`` are bound."""
    cols = room_messages.c
    query = sa.select(room_messages).where(cols.room_id == sa.bindparam("room"))
    if before:
        query = query.where(cols.seq < sa.bindparam("before"))
    if after:
        query = query.where(cols.seq > sa.bindparam("after"))
    order = cols.seq.asc() if after else cols.seq.desc()
    return query.order_by(order).limit(sa.bindparam("limit", type_=sa.Integer))


async def messages_page(
    conn: AsyncConnection,
    room_id: str,
    *,
    before_seq: int | None = None,
    after_seq: int | None = None,
    limit: int = 50,
) -> tuple[list[Row[tuple[object, ...]]], bool]:
    """One page, oldest first, and whether more lie beyond it in the reading direction.

    With ``after_seq`` the page starts right after it (reading forward); otherwise it is the newest
    ``limit`` messages before ``before_seq`` (or the end)."""
    query = _page(before_seq is not None, after_seq is not None)
    params = {"room": room_id, "before": before_seq, "after": after_seq, "limit": limit + 1}
    rows = list((await conn.execute(query, params)).all())
    has_more = len(rows) > limit
    return (rows[:limit] if after_seq is not None else rows[:limit][::-1]), has_more
