"""SQL of message search: the words of a query against the index of migration 0009 (SQLite's
FTS5 table ``city_message_search``, PostgreSQL's ``search_words`` column and its GIN index),
newest first, bounded by a statement timeout.

The query's words come from ``rooms/search.py`` already split (letters and digits only) and
folded; here they become the index's query language, each one quoted, never spliced:

- FTS5: ``body : ("w1" AND "w2"*)``, each word a string in double quotes (a quote doubled),
  the last one a prefix (or the terms it stands for, ``_longer_terms``); a room's search adds
  its id as a phrase of the ``room_id`` column and checks the row's ``room_id`` as well (a
  phrase of an id's tokens may match a longer id).
  Newest first is the rowid, descending, which FTS5 walks itself: a common word stops after
  ``limit`` rows, a rare one reads its few.
- PostgreSQL: ``to_tsquery('simple', $1)`` of ``'w1' & 'w2':*``, each word a quoted lexeme
  (quotes doubled, backslashes escaped). Newest first is ``(created_at, id)`` (the index
  ``ix_room_messages_recent``), in one room ``seq``. Two plans, chosen per query by the planner
  from the column's statistics (``plan_cache_mode = force_custom_plan``: a generic plan of a
  prepared statement cannot tell a rare word from a common one): for a rare word the GIN index
  gives its few rows, then sorted; for a common one (a GIN bitmap of 100,000 rows, then
  sorted, would take seconds at a million messages) the recency index is walked backwards
  (``(room_id, seq)`` in one room) and each row's stored words checked until ``limit`` match.
  The stored column makes that check a read, not a parse of the body.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.errors import Unavailable
from daarion_city.storage.database import Database
from daarion_city.storage.tables import UTCDateTime, room_messages

FTS = "city_message_search"
QUERY_CANCELED = "57014"  # PostgreSQL's statement_timeout
PROGRESS_STEPS = 100  # SQLite: the VM instructions between two looks at the clock


class SearchTimeout(Unavailable):
    status, code = 503, "search_timeout"


def fts_query(words: list[str], room_id: str | None, longer: list[str] | None = None) -> str:
    """The FTS5 query: every word, the last as a prefix (or, given the index's ``longer`` terms
    that begin with it, as itself or one of them); in one room's ``room_id`` column."""
    quoted = [_fts_string(w) for w in words]
    if longer is None:
        quoted[-1] += "*"
    elif longer:
        quoted[-1] = "(" + " OR ".join([quoted[-1], *map(_fts_string, longer)]) + ")"
    match = f"body : ({' AND '.join(quoted)})"
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


_LONGER = sa.text(
    f"SELECT term FROM {FTS}_vocab WHERE term >= :low AND term < :high LIMIT :most"
).bindparams(sa.bindparam("most", type_=sa.Integer))
MAX_LONGER = 32


async def _longer_terms(conn: AsyncConnection, word: str) -> list[str] | None:
    """The index's terms that begin with ``word`` and are longer, or None past ``MAX_LONGER``.

    FTS5 answers ``"w"*`` by merging the whole doclists of every term it stands for before the
    first row comes out: 9-20 ms for a word in half of a million messages. The terms, read from
    fts5vocab from just past ``word`` itself (so its own doclist is not counted), turn it into
    ``("w" OR "wa" OR ...)``, which FTS5 reads lazily, newest first: 0.3 ms."""
    params = {"low": word + "\x01", "high": word + "\U0010ffff", "most": MAX_LONGER + 1}
    terms = [str(t) for t in (await conn.execute(_LONGER, params)).scalars()]
    return None if len(terms) > MAX_LONGER else terms


_FTS_TABLE = sa.table(FTS, sa.column("rowid", sa.Integer))
_MESSAGE_ROWID = sa.literal_column("city_room_messages.rowid", sa.Integer)


@functools.cache
def _sqlite_search(in_room: bool, after_cursor: bool) -> sa.Select[Any]:
    key = _FTS_TABLE.c.rowid
    query = (
        sa.select(room_messages, key.label("search_key"))
        .select_from(_FTS_TABLE.join(room_messages, key == _MESSAGE_ROWID))
        .where(sa.text(f"{FTS} MATCH :match"), sa.not_(room_messages.c.deleted))
    )
    if in_room:
        query = query.where(room_messages.c.room_id == sa.bindparam("room"))
    if after_cursor:
        query = query.where(key < sa.bindparam("before", type_=sa.Integer))
    return query.order_by(key.desc()).limit(sa.bindparam("limit", type_=sa.Integer))


@functools.cache
def _pg_search(in_room: bool, after_cursor: bool) -> sa.Select[Any]:
    cols = room_messages.c
    query = sa.select(room_messages).where(
        sa.not_(cols.deleted),
        sa.text("city_room_messages.search_words @@ to_tsquery('simple', :match)").bindparams(
            sa.bindparam("match", type_=sa.String)
        ),
    )
    if in_room:
        query = query.where(cols.room_id == sa.bindparam("room"))
        if after_cursor:
            query = query.where(cols.seq < sa.bindparam("before", type_=sa.BigInteger))
        return query.order_by(cols.seq.desc()).limit(sa.bindparam("limit", type_=sa.Integer))
    if after_cursor:
        at = sa.bindparam("before_at", type_=UTCDateTime())
        query = query.where(
            sa.tuple_(cols.created_at, cols.id) < sa.tuple_(at, sa.bindparam("before_id"))
        )
    order = (cols.created_at.desc(), cols.id.desc())
    return query.order_by(*order).limit(sa.bindparam("limit", type_=sa.Integer))


Key = int | tuple[datetime, str]
"""Where a hit stands in its search's order: a rowid (SQLite), a seq (PostgreSQL, in one room),
or ``(created_at, id)`` (PostgreSQL)."""


def key_of(db: Database, row: Row[tuple[Any, ...]], in_room: bool) -> Key:
    if db.is_sqlite:
        return int(row.search_key)
    return int(row.seq) if in_room else (row.created_at, str(row.id))


_PG_SETTINGS = sa.text(
    "SELECT set_config('statement_timeout', :ms, true),"
    " set_config('plan_cache_mode', 'force_custom_plan', true)"
)

Hits = list[Row[tuple[Any, ...]]]


async def search(
    db: Database,
    words: list[str],
    *,
    room_id: str | None,
    before: Key | None,
    limit: int,
    time_limit: float,
) -> Hits:
    """Up to ``limit`` messages (not deleted) with every word, newest first, after the cursor
    ``before`` (a hit's ``key_of``). Raises
    :class:`SearchTimeout` past ``time_limit`` seconds."""
    in_room, after_cursor = room_id is not None, before is not None
    params: dict[str, Any] = {"room": room_id, "before": before, "limit": limit}
    if isinstance(before, tuple):
        params["before_at"], params["before_id"] = before
    if db.is_sqlite:
        query = _sqlite_search(in_room, after_cursor)
        async with db.read() as conn, _sqlite_deadline(conn, time_limit) as expired:
            try:
                longer = await _longer_terms(conn, words[-1])
                params["match"] = fts_query(words, room_id, longer)
                return list((await conn.execute(query, params)).all())
            except OperationalError as exc:
                if expired():
                    raise SearchTimeout("the search took too long") from exc
                raise
    query = _pg_search(in_room, after_cursor)
    params["match"] = ts_query(words)
    async with db.read() as conn:
        try:
            # SET LOCAL, both in one round trip (the transaction is the connection's read).
            await conn.execute(_PG_SETTINGS, {"ms": str(max(1, int(time_limit * 1000)))})
            return list((await conn.execute(query, params)).all())
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == QUERY_CANCELED:
                raise SearchTimeout("the search took too long") from exc
            raise


@asynccontextmanager
async def _sqlite_deadline(
    conn: AsyncConnection, time_limit: float
) -> AsyncIterator[Callable[[], bool]]:
    """A progress handler that interrupts the connection's statement past ``time_limit`` seconds
    (SQLite has no statement timeout); yields whether the deadline has passed."""
    deadline = time.monotonic() + time_limit

    def expired() -> bool:
        return time.monotonic() > deadline

    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.set_progress_handler(expired, PROGRESS_STEPS)
    try:
        yield expired
    finally:
        await driver.set_progress_handler(None, PROGRESS_STEPS)
