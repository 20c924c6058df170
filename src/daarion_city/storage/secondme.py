"""SQL for Second Me sessions and messages. Every query names the user: no user reads another's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.database import insert_for
from daarion_city.storage.tables_secondme import secondme_memory as memory
from daarion_city.storage.tables_secondme import secondme_messages as messages
from daarion_city.storage.tables_secondme import secondme_sessions as sessions


async def get_session(conn: AsyncConnection, user_id: str) -> Row[Any] | None:
    return (await conn.execute(sa.select(sessions).where(sessions.c.user_id == user_id))).first()


async def take_session(
    conn: AsyncConnection,
    *,
    session_id: str,
    user_id: str,
    agent_id: str,
    now: datetime,
    until: datetime,
) -> Row[Any] | None:
    """The user's session with its lease taken until ``until`` (one invocation at a time per
    user), created on first use; None when another caller holds the lease. One statement when
    the session exists."""
    c = sessions.c
    taken = await conn.execute(
        sessions.update()
        .where(c.user_id == user_id, sa.or_(c.busy_until.is_(None), c.busy_until < now))
        .values(busy_until=until)
        .returning(*sessions.c)
    )
    row = taken.first()
    if row is not None:
        return row
    created = await conn.execute(
        insert_for(conn.dialect.name)(sessions)
        .values(
            id=session_id,
            user_id=user_id,
            agent_id=agent_id,
            created_at=now,
            updated_at=now,
            busy_until=until,
        )
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    if not created.rowcount:
        return None  # it exists, and its lease is held
    return await get_session(conn, user_id)


def _within_budget(now: datetime, daily_tokens: int) -> sa.ColumnElement[bool]:
    c = sessions.c
    return sa.or_(
        c.tokens_day.is_(None),
        c.tokens_day != now.astimezone(UTC).date(),
        c.tokens_today < daily_tokens,
    )


async def take_and_ask(
    conn: AsyncConnection,
    *,
    until: datetime,
    daily_tokens: int,
    prompt: dict[str, Any],
    recent: int,
) -> Row[Any] | None:
    """PostgreSQL, on an autocommit connection: the user's lease taken and their prompt stored
    in one statement (atomic by itself, one round trip), if the session exists, is free and
    has budget left today; else None and nothing is written (``take_session`` in a transaction
    then tells which). ``prompt`` holds the message's columns but ``session_id``.

    The row is the session's, with what the context is built from: the memory's ``about`` and
    ``summary`` (None without a memory row: ``has_memory``) and the ``recent`` newest answered
    turns, oldest first, as a JSON array of ``[id, role, content]`` (``recent_turns``)."""
    c = sessions.c
    now = prompt["created_at"]
    taken = (
        sessions.update()
        .where(
            c.user_id == prompt["user_id"],
            sa.or_(c.busy_until.is_(None), c.busy_until < now),
            _within_budget(now, daily_tokens),
        )
        .values(busy_until=until)
        .returning(*sessions.c)
        .cte("taken")
    )
    names = sorted(prompt)
    values = [sa.literal(prompt[n], type_=messages.c[n].type) for n in names]
    asked = (
        messages.insert()
        .from_select([*names, "session_id"], sa.select(*values, taken.c.id))
        .cte("asked")
    )
    m = messages.c
    newest = (
        sa.select(m.pos, m.id, m.role, m.content)
        .where(m.user_id == prompt["user_id"], m.status == "ok")
        .order_by(m.pos.desc())
        .limit(recent)
        .subquery("newest")
    )
    turns = sa.select(
        sa.func.coalesce(
            sa.func.json_agg(
                aggregate_order_by(
                    sa.func.json_build_array(newest.c.id, newest.c.role, newest.c.content),
                    newest.c.pos,
                )
            ),
            sa.text("'[]'::json"),
        )
    ).scalar_subquery()
    # Its commit does not wait for the WAL to reach the disk (about 4 ms of fsync on the
    # benchmark machine, on the path to the first token): set_config(..., true) holds for this
    # statement's own transaction. A PostgreSQL crash in the next ~200 ms (wal_writer_delay)
    # could lose the lease and the pending prompt, never an answer: the answer's commit waits
    # for the disk, and flushes this one with it.
    no_wait = sa.func.set_config("synchronous_commit", "off", True).label("no_wait")
    query = (
        sa.select(
            taken,
            memory.c.user_id.is_not(None).label("has_memory"),
            memory.c.about,
            memory.c.summary,
            sa.type_coerce(turns, postgresql.JSON).label("recent_turns"),
            no_wait,
        )
        .select_from(taken.outerjoin(memory, memory.c.user_id == taken.c.user_id))
        .add_cte(asked)
    )
    return (await conn.execute(query)).first()


async def release_lease(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        sessions.update().where(sessions.c.user_id == user_id).values(busy_until=None)
    )


async def add_message(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(messages.insert().values(**values))


async def set_message_status(
    conn: AsyncConnection, user_id: str, message_id: str, status: str, error_code: str | None
) -> bool:
    """Whether the message exists (and now has ``status``)."""
    result = await conn.execute(
        messages.update()
        .where(messages.c.user_id == user_id, messages.c.id == message_id)
        .values(status=status, error_code=error_code)
    )
    return bool(result.rowcount)


def _today(tokens: int, now: datetime) -> dict[str, Any]:
    """The day's counter of a session, with ``tokens`` more spent ``now`` (a new UTC day
    starts it again)."""
    day = now.astimezone(UTC).date()
    c = sessions.c
    return {
        "tokens_today": sa.case(
            (c.tokens_day == day, c.tokens_today + tokens), else_=sa.literal(tokens)
        ),
        "tokens_day": day,
    }


async def record_answer(conn: AsyncConnection, user_id: str, *, tokens: int, now: datetime) -> None:
    await conn.execute(
        sessions.update()
        .where(sessions.c.user_id == user_id)
        .values(
            total_interactions=sessions.c.total_interactions + 1,
            total_tokens=sessions.c.total_tokens + tokens,
            last_interaction=now,
            updated_at=now,
            busy_until=None,
            **_today(tokens, now),
        )
    )


async def charge(conn: AsyncConnection, user_id: str, *, tokens: int, now: datetime) -> None:
    """Tokens spent for the user besides an answer (a summary's refresh): today's budget."""
    await conn.execute(
        sessions.update().where(sessions.c.user_id == user_id).values(**_today(tokens, now))
    )


def spent_today(session: Row[Any], now: datetime) -> int:
    """The tokens the user spent on ``now``'s UTC day (the session's counter)."""
    if session.tokens_day != now.astimezone(UTC).date():
        return 0
    return int(session.tokens_today)


async def recent(
    conn: AsyncConnection, user_id: str, limit: int, *, answered_only: bool = False
) -> list[Row[Any]]:
    """The user's newest ``limit`` messages, oldest first."""
    query = sa.select(messages).where(messages.c.user_id == user_id)
    if answered_only:
        query = query.where(messages.c.status == "ok")
    rows = (await conn.execute(query.order_by(messages.c.pos.desc()).limit(limit))).all()
    return list(rows)[::-1]


async def clear(conn: AsyncConnection, user_id: str) -> int:
    result = await conn.execute(messages.delete().where(messages.c.user_id == user_id))
    return int(result.rowcount or 0)


async def all_turns(conn: AsyncConnection, user_id: str) -> list[Row[Any]]:
    """Every message of the user, oldest first (``GET /city/me/export``)."""
    query = sa.select(messages).where(messages.c.user_id == user_id).order_by(messages.c.pos)
    return list((await conn.execute(query)).all())


async def erase(conn: AsyncConnection, user_id: str) -> None:
    """Everything Second Me keeps of the user: messages, memory, session (``DELETE /city/me``)."""
    await clear(conn, user_id)
    await conn.execute(memory.delete().where(memory.c.user_id == user_id))
    await conn.execute(sessions.delete().where(sessions.c.user_id == user_id))
