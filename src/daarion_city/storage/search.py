"""SQL of message search: the words of a query against the index of migration 0009 (SQLite's
FTS5 table ``city_message_search``, PostgreSQL's ``search_words`` column and its GIN index),
newest first, bounded by a statement timeout.

The query's words come from ``rooms/search.py`` already split (letters and digits only) and
folded; here they become the index's query language, each one quoted, never spliced:

- FTS5: ``body : ("w1" "w2"*)``, each word a string in double quotes (a quote doubled), the
  last one a prefix; a room's search adds its id as a phrase of the ``room_id`` column and
  checks the row's ``room_id`` as well (a phrase of an id's tokens may match a longer id).
  Newest first is the rowid, descending, which FTS5 walks itself: a common word stops after
  ``limit`` rows, a rare one reads its few.
- PostgreSQL: ``to_tsquery('simple', $1)`` of ``'w1' & 'w2':*``, each word a quoted lexeme
  (quotes doubled, backslashes escaped). Two plans, chosen per query by the planner from the
  column's statistics (``plan_cache_mode = force_custom_plan``: a generic plan of a prepared
  statement cannot tell a rare word from a common one): for a rare word, the GIN index
  gives its few rows, sorted; for a common one (a GIN bitmap of 100,000 rows then sorted took
  seconds at a million messages), the recency order's index is walked backwards (the primary
  key: ids begin with their millisecond, so ``id DESC`` is newest first; in one room
  ``(room_id, seq)``) and each row's stored words checked until ``limit`` match. The stored
  column makes that check a read, not a parse of the body.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.errors import Unavailable
from daarion_city.storage.database import Database
from daarion_city.storage.tables import room_messages

FTS = "city_message_search"
QUERY_CANCELED = "57014"  # PostgreSQL's statement_timeout
PROGRESS_STEPS = 100  # SQLite: the VM instructions between two looks at the clock


class SearchTimeout(Unavailable):
    status, code = 503, "search_timeout"


def fts_query(words: list[str], room_id: str | None) -> str:
    """The FTS5 query: every word, the last as a prefix; in one room's ``room_id`` column."""
    quoted = [_fts_string(w) for w in words]
    quoted[-1] += "*"
    match = f"body : ({' '.join(quoted)})"
    if room_id is not None:
        match = f"room_id : {_fts_string(room_id)} AND {match}"
    return match


def _fts_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def ts_query(words: list[str]) -> str:
    """The ``to_tsquery`` text: every word a quoted lexeme, the last as a prefix."""
    lexemes = ["'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words]
    lexemes[-1] += ":*"
    return " & ".join(lexemes)


_FTS_TABLE = sa.table(FTS, sa.column("rowid", sa.Integer))
_MESSAGE_ROWID = sa.literal_column("city_room_messages.rowid", sa.Integer)


@functools.cache
def _sqlite_search(in_room: bool, after_cursor: bool) -> sa.Select[Any]:
    key = _FTS_TABLE.c.rowid
    query = (
        sa.select(room_messages, key.label("search_key"))
        .select_from(_FTS_TABLE.join(room_messages, _MESSAGE_ROWID == key))
        .where(sa.text(f"{FTS} MATCH :match"))
    )
    if in_room:
        query = query.where(room_messages.c.room_id == sa.bindparam("room"))
    if after_cursor:
        query = query.where(key < sa.bindparam("before", type_=sa.Integer))
    return query.order_by(key.desc()).limit(sa.bindparam("limit", type_=sa.Integer))


@functools.cache
def _pg_search(in_room: bool, after_cursor: bool) -> sa.Select[Any]:
    cols = room_messages.c
    key: sa.ColumnElement[Any] = cols.seq if in_room else cols.id
    query = sa.select(room_messages, key.label("search_key")).where(
        sa.not_(cols.deleted),
        sa.text("city_room_messages.search_words @@ to_tsquery('simple', :match)"),
    )
    if in_room:
        query = query.where(cols.room_id == sa.bindparam("room"))
    if after_cursor:
        before = sa.bindparam("before", type_=sa.BigInteger if in_room else sa.String)
        query = query.where(key < before)
    return query.order_by(key.desc()).limit(sa.bindparam("limit", type_=sa.Integer))


Hits = list[Row[tuple[Any, ...]]]


async def search(
    db: Database,
    words: list[str],
    *,
    room_id: str | None,
    before: int | str | None,
    limit: int,
    timeout: float,
) -> Hits:
    """Up to ``limit`` messages (not deleted) with every word, newest first, after the cursor
    ``before`` (a row's ``search_key``); each row has its ``search_key``. Raises
    :class:`SearchTimeout` past ``timeout`` seconds."""
    in_room, after_cursor = room_id is not None, before is not None
    params: dict[str, Any] = {"room": room_id, "before": before, "limit": limit}
    if db.is_sqlite:
        query = _sqlite_search(in_room, after_cursor)
        params["match"] = fts_query(words, room_id)
        async with db.read() as conn, _sqlite_deadline(conn, timeout) as expired:
            try:
                return list((await conn.execute(query, params)).all())
            except OperationalError as exc:
                if expired():
                    raise SearchTimeout("the search took too long") from exc
                raise
    query = _pg_search(in_room, after_cursor)
    params["match"] = ts_query(words)
    async with db.read() as conn:
        try:
            # SET takes no parameters: the number is formatted, an int.
            ms = max(1, int(timeout * 1000))
            await conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            return list((await conn.execute(query, params)).all())
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
                raise SearchTimeout("the search took too long") from exc
            raise


@asynccontextmanager
async def _sqlite_deadline(
    conn: AsyncConnection, timeout: float
) -> AsyncIterator[Callable[[], bool]]:
    """A progress handler that interrupts the connection's statement past ``timeout`` seconds
    (SQLite has no statement timeout); yields whether the deadline has passed."""
    deadline = time.monotonic() + timeout

    def expired() -> bool:
        return time.monotonic() > deadline

    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.set_progress_handler(expired, PROGRESS_STEPS)
    try:
        yield expired
    finally:
        await driver.set_progress_handler(None, PROGRESS_STEPS)
