"""SQL for the Matrix rooms bridge (``tables_matrix.py``): the rooms' mapping, the id maps, the
outbound cursors, the transactions done and Matrix users' names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.database import insert_for
from daarion_city.storage.tables import audit, rooms
from daarion_city.storage.tables_matrix import (
    matrix_cursors,
    matrix_events,
    matrix_members,
    matrix_reactions,
    matrix_transactions,
)

# --- rooms ------------------------------------------------------------------------------------


async def rooms_to_bridge(conn: AsyncConnection, slugs: list[str] | None) -> list[Row[Any]]:
    """The rooms named by ``slugs`` (None: every room), oldest first."""
    query = sa.select(rooms).order_by(rooms.c.created_at, rooms.c.id)
    if slugs is not None:
        query = query.where(rooms.c.slug.in_(slugs))
    return list((await conn.execute(query)).all())


async def set_matrix_room(
    conn: AsyncConnection, room_id: str, matrix_room_id: str, alias: str
) -> None:
    await conn.execute(
        rooms.update()
        .where(rooms.c.id == room_id)
        .values(matrix_room_id=matrix_room_id, matrix_room_alias=alias)
    )


async def room_of_matrix(conn: AsyncConnection, matrix_room_id: str) -> Row[Any] | None:
    query = sa.select(rooms).where(rooms.c.matrix_room_id == matrix_room_id)
    return (await conn.execute(query)).first()


async def last_seqs(conn: AsyncConnection, room_ids: list[str]) -> dict[str, int]:
    query = sa.select(rooms.c.id, rooms.c.last_seq).where(rooms.c.id.in_(room_ids))
    return {str(r.id): int(r.last_seq) for r in (await conn.execute(query)).all()}


# --- cursors ----------------------------------------------------------------------------------


async def cursor(conn: AsyncConnection, room_id: str) -> tuple[int, int] | None:
    """How far the room has gone to Matrix: (timeline seq, audit pos)."""
    c = matrix_cursors.c
    row = (await conn.execute(sa.select(c.seq, c.audit_pos).where(c.room_id == room_id))).first()
    return None if row is None else (int(row.seq), int(row.audit_pos))


async def start_cursor(conn: AsyncConnection, room_id: str, backfill: int) -> tuple[int, int]:
    """A newly bridged room's cursor ``backfill`` events before its newest seq, at its newest
    audit entry; or the cursor it has."""
    last_seq = (
        await conn.execute(sa.select(rooms.c.last_seq).where(rooms.c.id == room_id))
    ).scalar_one()
    last_pos = await newest_audit_pos(conn)
    await conn.execute(
        insert_for(conn.dialect.name)(matrix_cursors)
        .values(room_id=room_id, seq=max(0, int(last_seq) - backfill), audit_pos=last_pos)
        .on_conflict_do_nothing(index_elements=["room_id"])
    )
    found = await cursor(conn, room_id)
    assert found is not None
    return found


async def advance(
    conn: AsyncConnection, room_id: str, *, seq: int | None = None, audit_pos: int | None = None
) -> None:
    values: dict[str, int] = {}
    if seq is not None:
        values["seq"] = seq
    if audit_pos is not None:
        values["audit_pos"] = audit_pos
    await conn.execute(
        matrix_cursors.update().where(matrix_cursors.c.room_id == room_id).values(**values)
    )


async def sanctions_after(conn: AsyncConnection, room_id: str, pos: int) -> list[Any]:
    """The room's bans and unbans of Matrix users after audit entry ``pos``, oldest first."""
    a = audit.c
    query = (
        sa.select(a.pos, a.action, a.target_user_id, a.reason)
        .where(
            a.room_id == room_id,
            a.pos > pos,
            a.action.in_(("ban", "unban")),
            a.target_user_id.like("@%"),
        )
        .order_by(a.pos)
    )
    return list((await conn.execute(query)).all())


async def newest_audit_pos(conn: AsyncConnection) -> int:
    return int(
        (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(audit.c.pos), 0)))).scalar_one()
    )


# --- the id maps ------------------------------------------------------------------------------


async def map_event(
    conn: AsyncConnection, room_id: str, seq: int, event_id: str, origin: str
) -> None:
    await conn.execute(
        insert_for(conn.dialect.name)(matrix_events)
        .values(room_id=room_id, seq=seq, event_id=event_id, origin=origin)
        .on_conflict_do_nothing()
    )


async def event_of(conn: AsyncConnection, room_id: str, seq: int) -> str | None:
    e = matrix_events.c
    query = sa.select(e.event_id).where(e.room_id == room_id, e.seq == seq)
    found = (await conn.execute(query)).scalar_one_or_none()
    return None if found is None else str(found)


async def seq_of(conn: AsyncConnection, event_id: str) -> tuple[str, int] | None:
    """The city message (room id, seq) of a Matrix event, whichever side it came from."""
    e = matrix_events.c
    row = (await conn.execute(sa.select(e.room_id, e.seq).where(e.event_id == event_id))).first()
    return None if row is None else (str(row.room_id), int(row.seq))


async def map_reaction(conn: AsyncConnection, origin: str, **key: Any) -> None:
    """``key``: room_id, seq, user_id, emoji and event_id."""
    await conn.execute(
        insert_for(conn.dialect.name)(matrix_reactions)
        .values(origin=origin, **key)
        .on_conflict_do_nothing()
    )


async def reaction_event(
    conn: AsyncConnection, room_id: str, seq: int, user_id: str, emoji: str
) -> str | None:
    r = matrix_reactions.c
    query = sa.select(r.event_id).where(
        r.room_id == room_id, r.seq == seq, r.user_id == user_id, r.emoji == emoji
    )
    found = (await conn.execute(query)).scalar_one_or_none()
    return None if found is None else str(found)


async def reaction_of(conn: AsyncConnection, event_id: str) -> Row[Any] | None:
    r = matrix_reactions.c
    return (await conn.execute(sa.select(matrix_reactions).where(r.event_id == event_id))).first()


async def unmap_reaction(conn: AsyncConnection, event_id: str) -> None:
    await conn.execute(matrix_reactions.delete().where(matrix_reactions.c.event_id == event_id))


# --- transactions and members -------------------------------------------------------------------


async def transaction_done(conn: AsyncConnection, txn_id: str) -> bool:
    t = matrix_transactions.c
    return (await conn.execute(sa.select(t.txn_id).where(t.txn_id == txn_id))).first() is not None


async def record_transaction(conn: AsyncConnection, txn_id: str, now: datetime) -> None:
    await conn.execute(
        insert_for(conn.dialect.name)(matrix_transactions)
        .values(txn_id=txn_id, done_at=now)
        .on_conflict_do_nothing()
    )


async def set_member_name(
    conn: AsyncConnection, user_id: str, displayname: str, now: datetime
) -> None:
    stmt = insert_for(conn.dialect.name)(matrix_members).values(
        user_id=user_id, displayname=displayname, updated_at=now
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"displayname": displayname, "updated_at": now},
        )
    )


async def member_name(conn: AsyncConnection, user_id: str) -> str | None:
    m = matrix_members.c
    found = (
        await conn.execute(sa.select(m.displayname).where(m.user_id == user_id))
    ).scalar_one_or_none()
    return None if found is None else str(found)
