"""SQL for reaction changes (SPEC sections 9 and 12; ``rooms/reactions.py`` decides them): the
reaction rows of a room's messages, read and changed for a group of changes at once.

On PostgreSQL a group commits without a transaction of its own, in two statements on an
autocommit connection, as the posts do (``storage/messages.py``): ``read_group`` reads the
room's newest seq, the messages and their reaction rows in one snapshot; ``write_group``
writes everything the group changed in one statement, on the condition that the room's newest
seq is still the one read (every timeline change moves it, whichever instance makes it), else
nothing. Rows are found by their keys (a reaction's ``pos``, a message's ``id``) or through a
per-seq lookup (``storage/timeline.at_seqs``), never by a plan that trusts the statistics about
the size of a room. Elsewhere (SQLite, and a group that a concurrent change keeps
invalidating) the group commits in a transaction that locks the room first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.storage.tables import message_reactions, room_messages
from daarion_city.storage.timeline import at_seqs

MAX_REACTION_USERS = 20  # the users listed with each emoji

Entry = tuple[str, str]  # (emoji, user_id)


async def reaction_entries(
    conn: AsyncConnection, room_id: str, seqs: Iterable[int]
) -> dict[int, list[tuple[str, str]]]:
    """The messages' reactions as ``(emoji, user_id)`` rows in the order they were made."""
    query = _REACTION_ENTRIES[conn.dialect.name == "postgresql"]
    result = await conn.execute(query, {"b_room": room_id, "b_seqs": sorted(seqs)})
    entries: dict[int, list[tuple[str, str]]] = {}
    for seq, emoji, user_id in result.all():
        entries.setdefault(int(seq), []).append((emoji, user_id))
    return entries


async def replace_reactions(
    conn: AsyncConnection,
    room_id: str,
    *,
    deleted: list[tuple[int, str, str]],
    added: list[tuple[int, str, str]],
    at: datetime,
) -> None:
    """Delete, then insert (in order: their ``pos`` follows it) ``(seq, emoji, user_id)`` rows."""
    if deleted:
        await conn.execute(
            _DELETE_REACTION,
            [{"b_room": room_id, "b_seq": s, "b_emoji": e, "b_user": u} for s, e, u in deleted],
        )
    if added:
        await conn.execute(
            _INSERT_REACTION,
            [
                {"room_id": room_id, "seq": s, "emoji": e, "user_id": u, "created_at": at}
                for s, e, u in added
            ],
        )


async def set_reactions(
    conn: AsyncConnection, room_id: str, reactions: dict[int, list[dict[str, Any]]]
) -> None:
    """Each message's ``reactions`` as the wire lists them, by seq."""
    await conn.execute(
        _SET_REACTIONS,
        [
            {"b_room": room_id, "b_seq": seq, "b_reactions": value}
            for seq, value in reactions.items()
        ],
    )


@dataclass(slots=True)
class GroupState:
    """What a group of changes is decided against (PostgreSQL, ``read_group``)."""

    last_seq: int
    messages: dict[int, tuple[str, bool]]  # seq -> (id, deleted)
    entries: dict[int, list[tuple[int, Entry]]]  # seq -> [(pos, (emoji, user_id))], in order


async def read_group(conn: AsyncConnection, room_id: str, seqs: Iterable[int]) -> GroupState | None:
    """The room's newest seq, the messages at ``seqs`` and their reaction rows, in one
    statement (one snapshot); None when there is no such room."""
    result = await conn.exec_driver_sql(_READ_GROUP_PG, (room_id, sorted(seqs)))
    rows = result.all()
    if not rows:
        return None
    state = GroupState(int(rows[0].last_seq), {}, {})
    for row in rows:
        if row.seq is None:
            continue
        state.messages[int(row.seq)] = (row.id, bool(row.deleted))
        listed = state.entries.setdefault(int(row.seq), [])
        if row.pos is not None:
            listed.append((int(row.pos), (row.emoji, row.user_id)))
    return state


async def write_group(
    conn: AsyncConnection,
    room_id: str,
    *,
    last_seq: int,
    gone: list[int],
    added: list[tuple[int, str, str]],
    listed: dict[str, list[dict[str, Any]]],
    events: list[tuple[int, str, str, str]],
    at: datetime,
) -> int | None:
    """Everything a group changed, in one statement: its ``len(events)`` seqs taken (events:
    ``(target_seq, user_id, emoji, op)`` in order), the reaction rows at ``gone`` (their
    ``pos``) deleted and ``added`` (``(seq, emoji, user_id)``) inserted in order, and each
    touched message's ``reactions`` (by message id) written. Answers the first seq, or None
    (nothing written) when the room's newest seq is no longer ``last_seq``."""
    params = (
        room_id,
        len(events),
        last_seq,
        gone,
        at,
        [seq for seq, _, _ in added],
        [emoji for _, emoji, _ in added],
        [user for _, _, user in added],
        list(listed),
        [orjson.dumps(value).decode() for value in listed.values()],
        [target for target, _, _, _ in events],
        [user for _, user, _, _ in events],
        [emoji for _, _, emoji, _ in events],
        [op for _, _, _, op in events],
    )
    seqs = [int(row[0]) for row in (await conn.exec_driver_sql(_WRITE_GROUP_PG, params)).all()]
    return min(seqs) if seqs else None


_READ_GROUP_PG = """
SELECT r.last_seq, m.seq, m.id, m.deleted, e.pos, e.emoji, e.user_id
FROM city_rooms r
CROSS JOIN unnest($2::bigint[]) AS s(seq)
LEFT JOIN LATERAL (
    SELECT seq, id, deleted FROM city_room_messages WHERE room_id = $1 AND seq = s.seq OFFSET 0
) m ON true
LEFT JOIN LATERAL (
    SELECT pos, emoji, user_id FROM city_message_reactions
    WHERE room_id = $1 AND seq = m.seq OFFSET 0
) e ON true
WHERE r.id = $1
ORDER BY e.pos
"""

_WRITE_GROUP_PG = """
WITH seqs AS (
    UPDATE city_rooms SET last_seq = last_seq + $2 WHERE id = $1 AND last_seq = $3
    RETURNING last_seq
), gone AS (
    DELETE FROM city_message_reactions
    WHERE pos = ANY($4::bigint[]) AND EXISTS (SELECT 1 FROM seqs)
), made AS (
    INSERT INTO city_message_reactions (room_id, seq, emoji, user_id, created_at)
    SELECT $1, a.seq, a.emoji, a.user_id, $5
    FROM seqs, unnest($6::bigint[], $7::varchar[], $8::varchar[])
        WITH ORDINALITY AS a(seq, emoji, user_id, ord)
    ORDER BY a.ord
), listed AS (
    UPDATE city_room_messages x SET reactions = u.reactions
    FROM seqs, unnest($9::varchar[], $10::json[]) AS u(id, reactions)
    WHERE x.id = u.id
)
INSERT INTO city_room_events (room_id, seq, kind, target_seq, user_id, emoji, op, created_at)
SELECT $1, seqs.last_seq - $2 + e.ord, 'reaction', e.target, e.user_id, e.emoji, e.op, $5
FROM seqs, unnest($11::bigint[], $12::varchar[], $13::varchar[], $14::varchar[])
    WITH ORDINALITY AS e(target, user_id, emoji, op, ord)
RETURNING seq
"""


# The statements of the locked path, built once.
def _entries(postgres: bool) -> sa.Select[Any]:
    r = at_seqs(message_reactions, postgres).subquery()
    return sa.select(r.c.seq, r.c.emoji, r.c.user_id).order_by(r.c.pos)


_REACTION_ENTRIES = {postgres: _entries(postgres) for postgres in (True, False)}
_INSERT_REACTION = message_reactions.insert()
_DELETE_REACTION = message_reactions.delete().where(
    message_reactions.c.room_id == sa.bindparam("b_room"),
    message_reactions.c.seq == sa.bindparam("b_seq"),
    message_reactions.c.emoji == sa.bindparam("b_emoji"),
    message_reactions.c.user_id == sa.bindparam("b_user"),
)
_SET_REACTIONS = (
    room_messages.update()
    .where(
        room_messages.c.room_id == sa.bindparam("b_room"),
        room_messages.c.seq == sa.bindparam("b_seq"),
    )
    .values(reactions=sa.bindparam("b_reactions"))
)
