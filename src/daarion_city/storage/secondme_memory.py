"""SQL for Second Me's memory (SPEC section 5b): a user's ``about`` and rolling ``summary``, the
turns a summary has yet to cover, and full-text search over a user's own turns.

Search reads only the caller's entries: on SQLite the FTS5 table ``secondme_turns_fts`` (kept in
step with the turns by triggers, migration 0007) is asked for the user's id in its ``user_id``
column and the words in ``content``; on PostgreSQL the GIN index on ``(user_id, content_tsv)``
(the stored ``to_tsvector('simple', content)``) serves ``user_id = $1 AND ... @@ query``. No
stemming: a word matches itself (case and, on SQLite, diacritics aside), in any script. Every
query names the user: no user reads another's memory or turns.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.database import insert_for
from daarion_city.storage.tables_secondme import secondme_memory as memory
from daarion_city.storage.tables_secondme import secondme_messages as messages

WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 16  # of a query: more are dropped
SIMPLE: sa.ColumnElement[Any] = sa.literal_column("'simple'::regconfig")


def words_of(text: str, *, shortest: int = 2) -> list[str]:
    """The distinct words of ``text`` (lower case, in order), at most ``MAX_WORDS``."""
    seen: dict[str, None] = {}
    for word in WORD.findall(text.lower()):
        if len(word) >= shortest:
            seen.setdefault(word, None)
    return list(seen)[:MAX_WORDS]


async def get_memory(conn: AsyncConnection, user_id: str) -> Row[Any] | None:
    return (await conn.execute(sa.select(memory).where(memory.c.user_id == user_id))).first()


async def save_memory(conn: AsyncConnection, user_id: str, now: datetime, **values: Any) -> None:
    """Set some of the user's memory fields (``about``, ``summary``, ``summarized_pos``)."""
    statement = insert_for(conn.dialect.name)(memory).values(
        user_id=user_id, updated_at=now, **values
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id"], set_={"updated_at": now, **values}
        )
    )


async def advance_summary(
    conn: AsyncConnection, user_id: str, *, covered: int, summary: str, through: int, now: datetime
) -> bool:
    """Store a refreshed summary covering the turns up to ``through``, only if the memory still
    covers ``covered`` (a ``forget`` or another refresh in between wins)."""
    m = memory.c
    result = await conn.execute(
        memory.update()
        .where(m.user_id == user_id, m.summarized_pos == covered)
        .values(summary=summary, summarized_pos=through, updated_at=now)
    )
    if result.rowcount:
        return True
    if covered:
        return False
    inserted = await conn.execute(
        insert_for(conn.dialect.name)(memory)
        .values(user_id=user_id, summary=summary, summarized_pos=through, updated_at=now)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    return bool(inserted.rowcount)


async def context_boundary(conn: AsyncConnection, user_id: str, keep: int) -> int | None:
    """The pos of the user's ``keep``-th newest answered turn: the turns before it have fallen
    out of the context (None: none has)."""
    m = messages.c
    if keep == 0:
        return await newest_pos(conn, user_id) + 1
    result = await conn.execute(
        sa.select(m.pos)
        .where(m.user_id == user_id, m.status == "ok")
        .order_by(m.pos.desc())
        .offset(keep - 1)
        .limit(1)
    )
    found = result.scalar()
    return None if found is None else int(found)


async def newest_pos(conn: AsyncConnection, user_id: str) -> int:
    result = await conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(messages.c.pos), 0)).where(
            messages.c.user_id == user_id
        )
    )
    return int(result.scalar_one())


async def turns_between(
    conn: AsyncConnection, user_id: str, after_pos: int, before_pos: int, limit: int
) -> list[Row[Any]]:
    """The user's answered turns with ``after_pos < pos < before_pos``, oldest first, at most
    ``limit`` (the oldest)."""
    m = messages.c
    query = (
        sa.select(messages)
        .where(m.user_id == user_id, m.status == "ok", m.pos > after_pos, m.pos < before_pos)
        .order_by(m.pos)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def search(
    conn: AsyncConnection,
    user_id: str,
    words: list[str],
    *,
    limit: int,
    any_word: bool = False,
) -> list[Row[Any]]:
    """The user's answered turns that hold every word (``any_word``: any of them, the best
    matches first), else newest first."""
    if not words:
        return []
    m = messages.c
    if conn.dialect.name == "postgresql":
        query: sa.ColumnElement[Any] = sa.func.plainto_tsquery(SIMPLE, " ".join(words))
        if any_word:
            query = sa.cast(sa.func.replace(sa.cast(query, sa.Text), "&", "|"), _TSQUERY)
        vector: sa.ColumnElement[Any] = sa.literal_column("secondme_messages.content_tsv")
        match = vector.bool_op("@@")(query)
        order: list[sa.ColumnElement[Any]] = (
            [sa.func.ts_rank(vector, query).desc(), m.pos.desc()] if any_word else [m.pos.desc()]
        )
        statement = sa.select(messages).where(m.user_id == user_id, match)
    else:
        joiner = " OR " if any_word else " AND "
        terms = joiner.join(f'content:"{w}"' for w in words)
        owner = '"' + user_id.replace('"', "") + '"'
        expression = f"user_id:{owner} AND ({terms})"
        fts = sa.table("secondme_turns_fts", sa.column("rowid"))
        statement = (
            sa.select(messages)
            .join(fts, fts.c.rowid == m.pos)
            .where(sa.literal_column("secondme_turns_fts").op("MATCH")(expression))
        )
        order = (
            [sa.literal_column("bm25(secondme_turns_fts)"), m.pos.desc()]
            if any_word
            else [m.pos.desc()]
        )
    statement = statement.where(m.user_id == user_id, m.status == "ok")
    return list((await conn.execute(statement.order_by(*order).limit(limit))).all())


async def common_shares(conn: AsyncConnection) -> dict[str, float]:
    """PostgreSQL: the share of all turns (all users') that hold each common word, from the
    statistics of ``content_tsv`` (its most common elements, as of the last ANALYZE). Words
    not listed are rare."""
    row = (await conn.execute(_COMMON_PG)).first()
    if row is None or row.words is None:
        return {}
    return dict(zip(row.words, row.shares, strict=False))


async def word_shares(conn: AsyncConnection, words: list[str]) -> dict[str, float]:
    """SQLite: the share of all turns that hold each of ``words``, from the FTS5 vocabulary
    (exact, over the newest turn's ``pos``)."""
    if not words:
        return {}
    vocab = sa.table("secondme_turns_vocab", sa.column("term"), sa.column("doc"))
    result = await conn.execute(sa.select(vocab.c.term, vocab.c.doc).where(vocab.c.term.in_(words)))
    total = (await conn.execute(sa.select(sa.func.max(messages.c.pos)))).scalar() or 1
    return {str(term): float(doc) / float(total) for term, doc in result.all()}


_COMMON_PG = sa.text(
    "SELECT most_common_elems::text::text[] AS words, most_common_elem_freqs AS shares"
    " FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'secondme_messages'"
    " AND attname = 'content_tsv'"
)


class _TSQuery(sa.types.UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "tsquery"


_TSQUERY = _TSQuery()
