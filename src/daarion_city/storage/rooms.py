"""SQL for rooms and room membership (one query layer for SQLite and PostgreSQL); the messages
are in ``storage/messages.py``."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.database import insert_for
from daarion_city.storage.tables import room_members, room_messages, rooms

RoomRow = Row[tuple[str, str, str, str, bool, datetime, str | None, int, int]]


async def find_room(conn: AsyncConnection, ref: str) -> Row[tuple[object, ...]] | None:
    """A room by id or by slug."""
    result = await conn.execute(
        sa.select(rooms).where(sa.or_(rooms.c.id == ref, rooms.c.slug == ref))
    )
    return result.first()


# The newest message of a room, joined to its row: the one whose seq is the room's
# last_message_seq (kept by every commit of messages), found by the (room_id, seq) index.
LAST = room_messages.alias("last")
LAST_PREFIX = "lm_"
LAST_COLUMNS = [c.label(f"{LAST_PREFIX}{c.name}") for c in LAST.c]
_WITH_LAST = rooms.outerjoin(
    LAST, sa.and_(LAST.c.room_id == rooms.c.id, LAST.c.seq == rooms.c.last_message_seq)
)


async def list_rooms(
    conn: AsyncConnection, default_slugs: list[str], *, limit: int, offset: int
) -> list[Row[tuple[object, ...]]]:
    """Default rooms first (in the configured order, ``default_slugs``), then the newest; each
    row with its newest message as ``lm_*`` columns (None without one), in one statement."""
    # (CASE needs a WHEN: with no default rooms, every room ranks alike.)
    rank = (
        sa.case(
            {slug: i for i, slug in enumerate(default_slugs)},
            value=rooms.c.slug,
            else_=len(default_slugs),
        )
        if default_slugs
        else sa.literal(0)
    )
    query = (
        sa.select(rooms, *LAST_COLUMNS)
        .select_from(_WITH_LAST)
        .order_by(rooms.c.is_default.desc(), rank, rooms.c.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    return list((await conn.execute(query)).all())


async def room_with_newest(
    conn: AsyncConnection, room_id: str, count: int
) -> list[Row[tuple[object, ...]]]:
    """A room and its newest ``count`` messages, oldest first, in one statement: one row per
    message, the room's columns repeated and the message's as ``lm_*`` columns (one row with
    them None for a room without messages; no row for no room). The messages are the newest
    by the ``(room_id, seq)`` index, whatever else takes seqs."""
    newest = (
        sa.select(room_messages)
        .where(room_messages.c.room_id == room_id)
        .order_by(room_messages.c.seq.desc())
        .limit(count)
        .subquery("newest")
    )
    columns = [c.label(f"{LAST_PREFIX}{c.name}") for c in newest.c]
    query = (
        sa.select(rooms, *columns)
        .select_from(rooms.outerjoin(newest, sa.true()))
        .where(rooms.c.id == room_id)
        .order_by(newest.c.seq)
    )
    return list((await conn.execute(query)).all())


async def insert_room(
    conn: AsyncConnection,
    *,
    room_id: str,
    slug: str,
    name: str,
    description: str,
    created_by: str | None,
    created_at: datetime,
    is_default: bool = False,
) -> None:
    await conn.execute(
        rooms.insert().values(
            id=room_id,
            slug=slug,
            name=name,
            description=description,
            is_default=is_default,
            created_at=created_at,
            created_by=created_by,
            last_seq=0,
            member_count=0,
        )
    )


async def set_default_rooms(conn: AsyncConnection, slugs: list[str]) -> None:
    await conn.execute(rooms.update().where(rooms.c.slug.not_in(slugs)).values(is_default=False))
    if slugs:
        await conn.execute(rooms.update().where(rooms.c.slug.in_(slugs)).values(is_default=True))


async def existing_slugs(conn: AsyncConnection, slugs: list[str]) -> set[str]:
    result = await conn.execute(sa.select(rooms.c.slug).where(rooms.c.slug.in_(slugs)))
    return set(result.scalars())


async def rooms_created_by(conn: AsyncConnection, user_id: str) -> list[str]:
    query = sa.select(rooms.c.id).where(rooms.c.created_by == user_id).order_by(rooms.c.id)
    return list((await conn.execute(query)).scalars())


async def add_member(
    conn: AsyncConnection, room_id: str, user_id: str, name: str, joined_at: datetime
) -> bool:
    """Persist membership; True when it is new (then the room's member_count grows).
    Safe under concurrent joins: the insert is ON CONFLICT DO NOTHING."""
    result = await conn.execute(
        insert_for(conn.dialect.name)(room_members)
        .values(room_id=room_id, user_id=user_id, name=name, joined_at=joined_at)
        .on_conflict_do_nothing()
    )
    if not result.rowcount:
        return False
    await conn.execute(
        rooms.update().where(rooms.c.id == room_id).values(member_count=rooms.c.member_count + 1)
    )
    return True


async def member_name(conn: AsyncConnection, room_id: str, user_id: str) -> str | None:
    m = room_members.c
    query = sa.select(m.name).where(m.room_id == room_id, m.user_id == user_id)
    return (await conn.execute(query)).scalar_one_or_none()


async def remove_member(conn: AsyncConnection, room_id: str, user_id: str) -> bool:
    result = await conn.execute(
        room_members.delete().where(
            room_members.c.room_id == room_id, room_members.c.user_id == user_id
        )
    )
    if not result.rowcount:
        return False
    await conn.execute(
        rooms.update().where(rooms.c.id == room_id).values(member_count=rooms.c.member_count - 1)
    )
    return True
