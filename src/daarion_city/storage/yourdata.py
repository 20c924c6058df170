"""SQL for a user's own data (SPEC section 11): what ``GET /city/me/export`` shows of the city's
tables, what ``DELETE /city/me`` turns into tombstones or removes, and the retired user ids.

A user's messages are found by their author column without an index of their own (an export or
an erasure is rare, rate-limited, and reads the messages table once; every post would pay for
an index on the author)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.database import insert_for
from daarion_city.storage.tables import (
    feed_events,
    known_users,
    message_reactions,
    notifications,
    read_markers,
    reports,
    retired_users,
    room_members,
    room_messages,
    room_moderators,
    room_sanctions,
    rooms,
    suspensions,
)
from daarion_city.storage.timeline import (
    clear_reactions_at,
    insert_events,
    lock_room,
    take_seqs,
    tombstone,
)

Rows = list[Row[Any]]
ERASED_NAME = "deleted user"

# --- retired user ids -------------------------------------------------------------------------


async def retire(conn: AsyncConnection, user_id: str, at: datetime) -> None:
    """Retire the id (again: nothing changes, and the erasure runs again)."""
    await conn.execute(
        insert_for(conn.dialect.name)(retired_users)
        .values(user_id=user_id, retired_at=at)
        .on_conflict_do_nothing()
    )


async def retired_after(conn: AsyncConnection, pos: int) -> Rows:
    """Retired ids after ``pos`` (``pos``, ``user_id``, ``erased_at``), in order."""
    r = retired_users.c
    query: sa.Select[Any] = sa.select(r.pos, r.user_id, r.erased_at).where(r.pos > pos)
    query = query.order_by(r.pos)
    return list((await conn.execute(query)).all())


async def unfinished(conn: AsyncConnection) -> list[str]:
    r = retired_users.c
    query = sa.select(r.user_id).where(r.erased_at.is_(None)).order_by(r.pos)
    return list((await conn.execute(query)).scalars())


async def mark_erased(conn: AsyncConnection, user_id: str, at: datetime) -> None:
    r = retired_users.c
    await conn.execute(retired_users.update().where(r.user_id == user_id).values(erased_at=at))


# --- export -----------------------------------------------------------------------------------


async def _all(conn: AsyncConnection, query: sa.Select[Any]) -> Rows:
    return list((await conn.execute(query)).all())


async def profile(conn: AsyncConnection, user_id: str) -> Row[Any] | None:
    query = sa.select(known_users).where(known_users.c.user_id == user_id)
    return (await conn.execute(query)).first()


async def authored(conn: AsyncConnection, user_id: str) -> Rows:
    m = room_messages.c
    query = sa.select(room_messages).where(m.author_user_id == user_id)
    return await _all(conn, query.order_by(m.created_at, m.room_id, m.seq))


async def export_rows(conn: AsyncConnection, user_id: str) -> dict[str, Rows]:
    """Every other row about the user in the rooms' tables, by what it is."""
    queries: dict[str, sa.Select[Any]] = {
        "memberships": sa.select(room_members).where(room_members.c.user_id == user_id),
        "moderates": sa.select(room_moderators).where(room_moderators.c.user_id == user_id),
        "owns": sa.select(rooms.c.id).where(rooms.c.created_by == user_id),
        "sanctions": sa.select(room_sanctions).where(room_sanctions.c.user_id == user_id),
        "suspension": sa.select(suspensions).where(suspensions.c.user_id == user_id),
        "read_markers": sa.select(read_markers).where(read_markers.c.user_id == user_id),
        "notifications": sa.select(notifications)
        .where(notifications.c.user_id == user_id)
        .order_by(notifications.c.pos),
        "reactions": sa.select(message_reactions)
        .where(message_reactions.c.user_id == user_id)
        .order_by(message_reactions.c.pos),
        "reports": sa.select(reports)
        .where(reports.c.reporter_id == user_id)
        .order_by(reports.c.pos),
    }
    return {name: await _all(conn, query) for name, query in queries.items()}


# --- erasure ----------------------------------------------------------------------------------


async def rooms_with_messages(conn: AsyncConnection, user_id: str) -> list[str]:
    """The rooms holding messages of the user that are not tombstones yet."""
    m = room_messages.c
    query = sa.select(m.room_id).where(m.author_user_id == user_id, m.deleted.is_(False))
    return list((await conn.execute(query.distinct().order_by(m.room_id))).scalars())


async def erase_messages(
    conn: AsyncConnection, room_id: str, user_id: str, limit: int, at: datetime
) -> list[tuple[int, int]]:
    """Up to ``limit`` of the user's messages in the room become tombstones (``deleted_by``
    ``erasure``, the name ``deleted user``, no text, mentions or reactions), each with a
    deletion event at the room's next seqs, in the caller's transaction (the room's row locked
    first, as every timeline change). Returns ``(event seq, message seq)`` pairs."""
    await lock_room(conn, room_id)
    m = room_messages.c
    query = (
        sa.select(m.seq)
        .where(m.room_id == room_id, m.author_user_id == user_id, m.deleted.is_(False))
        .order_by(m.seq)
        .limit(limit)
    )
    seqs = [int(seq) for seq in (await conn.execute(query)).scalars()]
    if not seqs:
        return []
    await conn.execute(
        room_messages.update()
        .where(m.room_id == room_id, m.seq.in_(seqs))
        .values(**tombstone("erasure"), username=ERASED_NAME)
    )
    await clear_reactions_at(conn, room_id, seqs)
    first = await take_seqs(conn, room_id, len(seqs))
    pairs = [(first + i, seq) for i, seq in enumerate(seqs)]
    await insert_events(
        conn,
        [
            {
                "room_id": room_id,
                "seq": event_seq,
                "kind": "delete",
                "target_seq": seq,
                "user_id": user_id,
                "emoji": None,
                "op": None,
                "created_at": at,
            }
            for event_seq, seq in pairs
        ],
    )
    return pairs


async def rename_tombstones(conn: AsyncConnection, user_id: str) -> None:
    """The user's messages deleted before the erasure lose their name too."""
    m = room_messages.c
    await conn.execute(
        room_messages.update()
        .where(m.author_user_id == user_id, m.username != ERASED_NAME)
        .values(username=ERASED_NAME)
    )


async def remove_rest(conn: AsyncConnection, user_id: str) -> None:
    """What is left of the user in the rooms' tables once their messages are tombstones and they
    left their rooms: read markers, notifications, moderator roles, the known-user row; and
    their name in the feed's membership events."""
    for table in (read_markers, notifications, room_moderators, known_users):
        await conn.execute(table.delete().where(table.c.user_id == user_id))
    f = feed_events.c
    await conn.execute(
        feed_events.update()
        .where(f.user_id == user_id, f.kind.in_(["member_joined", "member_left"]))
        .values(payload={"name": ERASED_NAME})
    )
