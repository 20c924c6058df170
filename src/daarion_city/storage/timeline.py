"""SQL for the room timeline's other events (SPEC section 9): edits, deletions and reaction
changes of messages, each at the room's next seq, and the timeline read back in order (the
``since_seq`` replay, the hubs' gap healing, ``GET .../events``). New messages take their seqs
in ``storage/messages.py``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.tables import (
    message_reactions,
    room_events,
    room_messages,
    rooms,
)


async def lock_message(
    conn: AsyncConnection, room_id: str, seq: int
) -> Row[tuple[object, ...]] | None:
    """The message created at ``seq``, read after locking the room's row (PostgreSQL; SQLite's
    writer lock serialises the transaction): changes to a room's timeline commit one at a time,
    whichever instance makes them."""
    await lock_room(conn, room_id)
    result = await conn.execute(
        sa.select(room_messages).where(
            room_messages.c.room_id == room_id, room_messages.c.seq == seq
        )
    )
    return result.first()


async def lock_room(conn: AsyncConnection, room_id: str) -> None:
    await conn.execute(_LOCK, {"b_room": room_id})


async def take_seq(conn: AsyncConnection, room_id: str) -> int:
    """The room's next timeline seq, for an event that is not a new message."""
    return await take_seqs(conn, room_id, 1)


async def take_seqs(conn: AsyncConnection, room_id: str, count: int) -> int:
    """The first of the room's next ``count`` timeline seqs, for events that are not new
    messages."""
    result = await conn.execute(_TAKE, {"b_room": room_id, "b_count": count})
    return int(result.scalar_one()) - count + 1


async def insert_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Timeline events (each: ``room_id``, ``seq``, ``kind``, ``target_seq``, ``user_id``,
    ``emoji``, ``op``, ``created_at``), in one statement."""
    await conn.execute(_INSERT_EVENT, rows)


def tombstone(deleted_by: str) -> dict[str, Any]:
    """A deleted message's columns (SPEC 12): no text, mentions or reactions."""
    return {"body": "", "mentions": [], "reactions": [], "deleted": True, "deleted_by": deleted_by}


async def update_message(conn: AsyncConnection, room_id: str, seq: int, **values: Any) -> None:
    await conn.execute(
        room_messages.update()
        .where(room_messages.c.room_id == room_id, room_messages.c.seq == seq)
        .values(**values)
    )


async def insert_event(
    conn: AsyncConnection,
    *,
    room_id: str,
    seq: int,
    kind: str,
    target_seq: int,
    user_id: str,
    created_at: datetime,
    emoji: str | None = None,
    op: str | None = None,
) -> None:
    await conn.execute(
        room_events.insert().values(
            room_id=room_id,
            seq=seq,
            kind=kind,
            target_seq=target_seq,
            user_id=user_id,
            emoji=emoji,
            op=op,
            created_at=created_at,
        )
    )


async def clear_reactions(conn: AsyncConnection, room_id: str, seq: int) -> None:
    r = message_reactions.c
    await conn.execute(message_reactions.delete().where(r.room_id == room_id, r.seq == seq))


async def clear_reactions_at(conn: AsyncConnection, room_id: str, seqs: list[int]) -> None:
    r = message_reactions.c
    await conn.execute(message_reactions.delete().where(r.room_id == room_id, r.seq.in_(seqs)))


async def timeline_after(
    conn: AsyncConnection, room_id: str, after_seq: int, limit: int
) -> tuple[list[Row[tuple[object, ...]]], dict[int, Row[tuple[object, ...]]]]:
    """The timeline after ``after_seq``, oldest first, at most ``limit`` events (each row:
    ``seq``, ``kind`` — ``message``, ``edit``, ``delete`` or ``reaction`` — ``target_seq``,
    ``user_id``, ``emoji``, ``op``), and the messages they concern as they are now, by seq."""
    m, e = room_messages.c, room_events.c
    messages = sa.select(
        m.seq,
        sa.literal("message").label("kind"),
        m.seq.label("target_seq"),
        sa.null().label("user_id"),
        sa.null().label("emoji"),
        sa.null().label("op"),
    ).where(m.room_id == room_id, m.seq > after_seq)
    events = sa.select(e.seq, e.kind, e.target_seq, e.user_id, e.emoji, e.op).where(
        e.room_id == room_id, e.seq > after_seq
    )
    union = sa.union_all(messages, events).subquery("timeline")
    rows = list((await conn.execute(sa.select(union).order_by(union.c.seq).limit(limit))).all())
    return rows, await messages_at(conn, room_id, {int(r.target_seq) for r in rows})


async def messages_at(
    conn: AsyncConnection, room_id: str, seqs: Iterable[int]
) -> dict[int, Row[tuple[object, ...]]]:
    wanted = sorted(seqs)
    if not wanted:
        return {}
    query = _MESSAGES_AT[conn.dialect.name == "postgresql"]
    result = await conn.execute(query, {"b_room": room_id, "b_seqs": wanted})
    return {int(row.seq): row for row in result.all()}


# Statements built once.
def at_seqs(table: sa.Table, postgres: bool) -> sa.Select[Any]:
    """The rows of ``table`` of room ``b_room`` at the seqs ``b_seqs``, each found by its
    ``(room_id, seq)`` index on PostgreSQL whatever the statistics say: with
    ``room_id = $1 AND seq IN (...)``, a room that grew since the table was last analysed is
    thought small, and the planner reads all of the room's rows and filters them
    (bench/unread.py: about 74,000 rows per reaction group). One lookup per seq (a LATERAL
    subquery, kept apart from the join by its OFFSET) is the plan at any size."""
    c = table.c
    if not postgres:
        return sa.select(table).where(
            c.room_id == sa.bindparam("b_room"), c.seq.in_(sa.bindparam("b_seqs", expanding=True))
        )
    listed = sa.bindparam("b_seqs", type_=postgresql.ARRAY(sa.BigInteger))
    s = sa.func.unnest(listed).table_valued("seq").render_derived(name="s")
    one = (
        sa.select(table)
        .where(c.room_id == sa.bindparam("b_room"), c.seq == s.c.seq)
        .correlate(s)
        .offset(0)
        .lateral("m")
    )
    return sa.select(one).select_from(s).join(one, sa.true())


_MESSAGES_AT = {postgres: at_seqs(room_messages, postgres) for postgres in (True, False)}
_LOCK = sa.select(rooms.c.id).where(rooms.c.id == sa.bindparam("b_room")).with_for_update()
_TAKE = (
    rooms.update()
    .where(rooms.c.id == sa.bindparam("b_room"))
    .values(last_seq=rooms.c.last_seq + sa.bindparam("b_count", type_=sa.BigInteger))
    .returning(rooms.c.last_seq)
)
_INSERT_EVENT = room_events.insert()
