"""Migrations upgrade a database in place: its rows stay, and what the new code reads of them
is right."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from daarion_city.storage import messages, unread
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import alembic_config, head_revision, migrate
from tests.storage.conftest import now
from tests.storage.test_room_store import a_room


async def to_revision(db: Database, revision: str) -> None:
    async with db.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), revision))


async def test_conversation_upgrades_a_city_with_messages_in_place(db: Database) -> None:
    """0003 (conversation) on a database of 0002 that holds messages: they keep their ids,
    seqs and bodies, gain the v2 fields' defaults, the room knows its newest message and
    count, and the next message continues the room's seqs."""
    room_id = await a_room(db)
    await to_revision(db, "0002")
    async with db.begin() as conn:
        for seq in (1, 2, 3):
            await conn.execute(
                sa.text(
                    "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                    " body, created_at) VALUES (:id, :room, :seq, 'u_a', 'A', :body, :at)"
                ),
                {
                    "id": f"m_old{seq}",
                    "room": room_id,
                    "seq": seq,
                    "body": f"old {seq}",
                    "at": now().replace(tzinfo=None) if db.is_sqlite else now(),
                },
            )
        await conn.execute(
            sa.text("UPDATE city_rooms SET last_seq = 3 WHERE id = :room"), {"room": room_id}
        )
    assert await migrate(db) == head_revision()
    async with db.read() as conn:
        rows, _ = await messages.messages_page(conn, room_id, limit=10)
        listed = list(await store.list_rooms(conn, [], limit=500, offset=0))
    assert [(r.id, r.seq, r.body) for r in rows] == [
        (f"m_old{i}", i, f"old {i}") for i in (1, 2, 3)
    ]
    for r in rows:
        assert (r.reply_to_seq, r.mentions, r.edited_at, r.deleted, r.reactions) == (
            None,
            [],
            None,
            False,
            [],
        )
    (room,) = [r for r in listed if r.id == room_id]
    assert (room.last_message_seq, room.message_count, room.lm_id) == (3, 3, "m_old3")
    async with db.begin() as conn:
        assert await messages.reserve_seqs(conn, room_id, 1) == (3, 3)


async def test_unread_upgrade_starts_each_author_at_their_newest_message(db: Database) -> None:
    """0004 (read markers) on a database of 0003 that holds messages: each author's marker is
    at their newest message of each room and authors are known users, so nobody's own messages
    count as unread, and the counts of everyone else are exact."""
    room_id = await a_room(db)
    await to_revision(db, "0003")
    authors = ["u_a", "u_b", "u_a", "u_c", "u_b"]
    async with db.begin() as conn:
        for seq, author in enumerate(authors, start=1):
            await conn.execute(
                sa.text(
                    "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                    " body, created_at, ordinal) VALUES (:id, :room, :seq, :author, :author,"
                    " 'x', :at, :seq)"
                ),
                {
                    "id": f"m_{seq}",
                    "room": room_id,
                    "seq": seq,
                    "author": author,
                    "at": now().replace(tzinfo=None) if db.is_sqlite else now(),
                },
            )
        await conn.execute(
            sa.text(
                "UPDATE city_rooms SET last_seq = 5, last_message_seq = 5, message_count = 5"
                " WHERE id = :room"
            ),
            {"room": room_id},
        )
    assert await migrate(db) == head_revision()
    async with db.read() as conn:
        counts = await unread.counts(
            conn, ["u_a", "u_b", "u_c", "u_new"], room_id, listed_only=False
        )
        known = await unread.known(conn, ["u_a", "u_b", "u_c", "u_new"])
    assert [(c[0], c[2], c[3]) for c in counts] == [
        ("u_a", 3, 2),
        ("u_b", 5, 0),
        ("u_c", 4, 1),
        ("u_new", 0, 5),
    ]
    assert known == {"u_a", "u_b", "u_c"}


async def test_second_me_memory_upgrade_indexes_the_turns_and_counts_today(db: Database) -> None:
    """0007 (Second Me's memory) on a database of 0006 with turns: the turns are searchable,
    today's tokens are counted in the session, and the memory starts empty."""
    from datetime import timedelta

    from daarion_city.storage import secondme as turns
    from daarion_city.storage import secondme_memory as memory

    await to_revision(db, "0006")
    at = now().replace(tzinfo=None) if db.is_sqlite else now()
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO secondme_sessions (id, user_id, agent_id, created_at, updated_at)"
                " VALUES ('sms_a', 'u_a', 'ag', :at, :at)"
            ),
            {"at": at},
        )
        for i, (content, tokens, when) in enumerate(
            [
                ("Де мої бджоли?", None, at),
                ("На даху, як завжди.", 30, at),
                ("yesterday's bees", 500, at - timedelta(days=1)),
            ]
        ):
            await conn.execute(
                sa.text(
                    "INSERT INTO secondme_messages (id, session_id, user_id, role, content,"
                    " status, tokens_used, created_at) VALUES (:id, 'sms_a', 'u_a', :role,"
                    " :content, 'ok', :tokens, :at)"
                ),
                {
                    "id": f"smm_{i}",
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": content,
                    "tokens": tokens,
                    "at": when,
                },
            )
    assert await migrate(db) == head_revision()
    async with db.read() as conn:
        found = await memory.search(conn, "u_a", ["бджоли"], limit=5)
        assert [r.id for r in found] == ["smm_0"]
        assert [r.id for r in await memory.search(conn, "u_a", ["bees"], limit=5)] == ["smm_2"]
        session = await turns.get_session(conn, "u_a")
        assert session is not None
        assert turns.spent_today(session, now()) == 30
        assert await memory.get_memory(conn, "u_a") is None
