"""SQL for read markers, unread and mention counts, notifications and the users the city knows
(SPEC section 9).

The counts are arithmetic on what the rooms keep, so no request scans a room's history: the
messages after a marker are the room's ``message_count`` less the ``ordinal`` of the newest
message at or before the marker (one probe of the ``(room_id, seq)`` index), less the deleted
ones after it (the partial index on deleted messages). A user's own messages are never after
their marker (a post moves its author's marker to it), so none is subtracted. The mentions
after the marker are the user's notifications of that room after it (the unique
``(user_id, room_id, seq)`` index) whose message is not deleted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.clock import as_utc
from daarion_city.storage.database import insert_for
from daarion_city.storage.tables import known_users, notifications, read_markers, room_messages

Counts = tuple[str, str, int, int, int]
"""``(user_id, room_id, last_read_seq, unread_count, mention_count)``"""


# The users asked about, as a table: an array on PostgreSQL, a JSON list on SQLite.
_WHO = {
    "postgresql": "SELECT unnest(CAST(:users AS varchar[]))",
    "sqlite": "SELECT value FROM json_each(:users)",
}

_PAIR = """SELECT who.user_id, r.id AS room_id, r.slug, r.is_default, r.message_count,
        COALESCE(mk.last_read_seq, 0) AS marker
    FROM {rooms}
    LEFT JOIN city_read_markers mk ON mk.user_id = who.user_id AND mk.room_id = r.id"""

# The rooms a user lists: the default rooms (their partial index), and those they joined (the
# members' index by user); with ``room_filter`` one room only, or (not ``listed_only``) that
# room whether listed or not.
_DEFAULTS = "who JOIN city_rooms r ON r.is_default AND {room_filter}"
_JOINED = (
    "who JOIN city_room_members rm ON rm.user_id = who.user_id"
    " JOIN city_rooms r ON r.id = rm.room_id AND NOT r.is_default AND {room_filter}"
)
_ANY = "who JOIN city_rooms r ON {room_filter}"

_COUNTS = """
WITH who(user_id) AS ({who}), pairs AS ({pairs})
SELECT p.user_id, p.room_id, p.marker,
    p.message_count - COALESCE((
        SELECT COALESCE(m.ordinal, m.seq) FROM city_room_messages m
        WHERE m.room_id = p.room_id AND m.seq <= p.marker ORDER BY m.seq DESC LIMIT 1
    ), 0) - (
        SELECT count(*) FROM city_room_messages d
        WHERE d.room_id = p.room_id AND d.deleted AND d.seq > p.marker
    ) AS unread,
    (
        SELECT count(*) FROM city_notifications n
        WHERE n.user_id = p.user_id AND n.room_id = p.room_id AND n.seq > p.marker
            AND NOT EXISTS (
                SELECT 1 FROM city_room_messages nm
                WHERE nm.room_id = n.room_id AND nm.seq = n.seq AND nm.deleted
            )
    ) AS mentions
FROM pairs p ORDER BY p.user_id, p.is_default DESC, p.slug
"""


@functools.cache
def _counts(dialect: str, one_room: bool, listed_only: bool) -> sa.TextClause:
    room_filter = "r.id = :room" if one_room else "TRUE" if dialect == "postgresql" else "1"
    if listed_only:
        pairs = " UNION ALL ".join(
            _PAIR.format(rooms=rooms.format(room_filter=room_filter))
            for rooms in (_DEFAULTS, _JOINED)
        )
    else:
        pairs = _PAIR.format(rooms=_ANY.format(room_filter=room_filter))
    return sa.text(_COUNTS.format(who=_WHO[dialect], pairs=pairs))


def _users_param(conn: AsyncConnection, users: list[str]) -> Any:
    return users if conn.dialect.name == "postgresql" else orjson.dumps(users).decode()


async def counts(
    conn: AsyncConnection,
    users: Iterable[str],
    room_id: str | None = None,
    *,
    listed_only: bool = True,
) -> list[Counts]:
    """The counts of each user in each room they list (the rooms they joined and the default
    rooms), or in ``room_id`` only (when they list it, or in any case without
    ``listed_only``); in one statement."""
    who = list(users)
    if not who:
        return []
    if conn.dialect.name == "postgresql":
        # The best plan depends on the users and rooms asked about: a generic plan, which a
        # connection caches after five runs, was seen at 437 ms against 3 ms for a custom one
        # (bench/unread.py, a city of 5,000 rooms). For this transaction only.
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    statement = _counts(conn.dialect.name, room_id is not None, listed_only)
    params = {"users": _users_param(conn, who), "room": room_id}
    rows = (await conn.execute(statement, params)).all()
    return [(r[0], r[1], int(r[2]), max(int(r[3]), 0), int(r[4])) for r in rows]


@functools.cache
def _advance(dialect: str) -> Any:
    statement = insert_for(dialect)(read_markers)
    kept = read_markers.c.last_read_seq
    new = statement.excluded.last_read_seq
    return statement.on_conflict_do_update(
        index_elements=[read_markers.c.user_id, read_markers.c.room_id],
        set_={"last_read_seq": sa.case((new > kept, new), else_=kept)},
    )


async def advance_markers(conn: AsyncConnection, moves: list[tuple[str, str, int]]) -> None:
    """Move markers ``(user_id, room_id, seq)`` forward (a marker past ``seq`` stays)."""
    if not moves:
        return
    latest: dict[tuple[str, str], int] = {}
    for user_id, room_id, seq in moves:
        latest[user_id, room_id] = max(seq, latest.get((user_id, room_id), 0))
    rows = [{"user_id": u, "room_id": r, "last_read_seq": s} for (u, r), s in latest.items()]
    await conn.execute(_advance(conn.dialect.name), rows)


# --- known users ----------------------------------------------------------------------------------
# PostgreSQL: a batch of users in one statement (two arrays), not one row per execution: a join
# storm of thousands of new users is one round trip and one plan.
_ADD_KNOWN_PG = """
INSERT INTO city_users (user_id, name, first_seen)
SELECT u, n, $3 FROM unnest($1::varchar[], $2::varchar[]) AS k(u, n)
ON CONFLICT DO NOTHING
"""


async def add_known(conn: AsyncConnection, users: list[tuple[str, str]], at: datetime) -> None:
    """Record users ``(user_id, name)`` as seen (the first sighting is kept)."""
    if not users:
        return
    if conn.dialect.name == "postgresql":
        ids, names = [u for u, _ in users], [n[:100] for _, n in users]
        await conn.exec_driver_sql(_ADD_KNOWN_PG, (ids, names, as_utc(at)))
        return
    rows = [{"user_id": u, "name": n[:100], "first_seen": at} for u, n in users]
    statement = insert_for(conn.dialect.name)(known_users).on_conflict_do_nothing()
    await conn.execute(statement, rows)


async def known(conn: AsyncConnection, users: Iterable[str]) -> set[str]:
    """Which of ``users`` the service has seen."""
    ask = list(set(users))
    if not ask:
        return set()
    query = sa.select(known_users.c.user_id).where(known_users.c.user_id.in_(ask))
    return set((await conn.execute(query)).scalars())


# --- notifications --------------------------------------------------------------------------------
async def author_of(conn: AsyncConnection, room_id: str, seq: int) -> str | None:
    query = sa.select(room_messages.c.author_user_id).where(
        room_messages.c.room_id == room_id, room_messages.c.seq == seq
    )
    return (await conn.execute(query)).scalar_one_or_none()


async def insert_notifications(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[str]:
    """Insert notifications (a message notifies a user once: a repeat is skipped); the ids of
    those inserted."""
    if not rows:
        return []
    statement = (
        insert_for(conn.dialect.name)(notifications)
        .on_conflict_do_nothing(
            index_elements=[notifications.c.user_id, notifications.c.room_id, notifications.c.seq]
        )
        .returning(notifications.c.id)
    )
    return list((await conn.execute(statement, rows)).scalars())


N_PREFIX = "n_"


def _listed() -> sa.Select[Any]:
    n = notifications.c
    marker = sa.func.coalesce(read_markers.c.last_read_seq, 0)
    return (
        sa.select(
            room_messages,
            n.id.label("n_id"),
            n.user_id.label("n_user_id"),
            n.kind.label("n_kind"),
            n.created_at.label("n_created_at"),
            (n.seq <= marker).label("n_read"),
        )
        .select_from(
            notifications.join(
                room_messages,
                sa.and_(room_messages.c.room_id == n.room_id, room_messages.c.seq == n.seq),
            ).outerjoin(
                read_markers,
                sa.and_(read_markers.c.user_id == n.user_id, read_markers.c.room_id == n.room_id),
            )
        )
        .order_by(n.pos.desc())
    )


async def list_notifications(
    conn: AsyncConnection, user_id: str, *, limit: int, before: str | None = None
) -> list[Row[tuple[object, ...]]] | None:
    """The user's notifications, newest first, each joined to its message as it is now (and
    ``n_id``, ``n_kind``, ``n_created_at``, ``n_read``); those older than the notification
    ``before``, or None when the user has no such notification."""
    n = notifications.c
    query = _listed().where(n.user_id == user_id).limit(limit)
    if before is not None:
        pos = (
            await conn.execute(sa.select(n.pos).where(n.id == before, n.user_id == user_id))
        ).scalar_one_or_none()
        if pos is None:
            return None
        query = query.where(n.pos < pos)
    return list((await conn.execute(query)).all())


async def notifications_by_id(
    conn: AsyncConnection, ids: list[str]
) -> list[Row[tuple[object, ...]]]:
    """Notifications just inserted, as :func:`list_notifications` lists them."""
    return list((await conn.execute(_listed().where(notifications.c.id.in_(ids)))).all())


async def unread_messages(
    conn: AsyncConnection, user_id: str, room_id: str, limit: int
) -> list[Any]:
    """The room's newest ``limit`` messages after the user's read marker (none: from the start),
    tombstones skipped, oldest first."""
    m = room_messages.c
    marker = (
        sa.select(read_markers.c.last_read_seq)
        .where(read_markers.c.user_id == user_id, read_markers.c.room_id == room_id)
        .scalar_subquery()
    )
    query = (
        sa.select(m.seq, m.author_user_id, m.username, m.body, m.created_at)
        .where(m.room_id == room_id, m.seq > sa.func.coalesce(marker, 0), m.deleted.is_(False))
        .order_by(m.seq.desc())
        .limit(limit)
    )
    return list((await conn.execute(query)).all())[::-1]
