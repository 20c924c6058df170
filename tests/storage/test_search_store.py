"""The search index of migration 0009 on each backend: built for the messages a database held
before it, kept by the database itself through any INSERT, UPDATE or DELETE, and dropped by
the downgrade."""

from __future__ import annotations

import sqlalchemy as sa

from daarion_city.storage import search
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import head_revision, migrate
from tests.storage.conftest import now
from tests.storage.test_migrations import to_revision
from tests.storage.test_room_store import a_room


async def found(db: Database, *words: str, room_id: str | None = None) -> list[str]:
    rows = await search.search(
        db, list(words), room_id=room_id, before=None, limit=50, time_limit=5.0
    )
    return [r.id for r in rows]


async def insert(db: Database, room_id: str, seq: int, body: str, deleted: bool = False) -> None:
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                " body, created_at, deleted, ordinal) VALUES (:id, :room, :seq, 'u_a', 'A',"
                " :body, :at, :deleted, :seq)"
            ),
            {
                "id": f"m_{seq:028d}",
                "room": room_id,
                "seq": seq,
                "body": body,
                "deleted": deleted,
                "at": now().replace(tzinfo=None) if db.is_sqlite else now(),
            },
        )


async def execute(db: Database, sql: str, **params: object) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.text(sql), params)


async def test_the_upgrade_indexes_existing_messages_and_the_downgrade_drops_it(
    db: Database,
) -> None:
    room_id = await a_room(db)
    await to_revision(db, "0008")
    await insert(db, room_id, 1, "Старе повідомлення про Café")
    await insert(db, room_id, 2, "old message gone", deleted=True)
    await insert(db, room_id, 3, "old message kept")
    assert await migrate(db) == head_revision()
    assert await found(db, "повідомлення", "cafe") == [f"m_{1:028d}"]
    assert await found(db, "old", "mess") == [f"m_{3:028d}"]
    assert await found(db, "message", room_id=room_id) == [f"m_{3:028d}"]
    await to_revision(db, "0008")
    async with db.read() as conn:
        if db.is_sqlite:
            names = "SELECT name FROM sqlite_master WHERE name LIKE 'city_message_search%'"
        else:
            names = (
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'city_room_messages' AND column_name = 'search_words'"
            )
        assert (await conn.execute(sa.text(names))).all() == []
    await insert(db, room_id, 4, "written while there was no index")
    assert await migrate(db) == head_revision()
    assert await found(db, "written", "index") == [f"m_{4:028d}"]


async def test_any_statement_that_changes_a_message_keeps_the_index(db: Database) -> None:
    room_id = await a_room(db)
    other = await a_room(db)
    await insert(db, room_id, 1, "first words")
    await insert(db, other, 2, "first words elsewhere")
    assert await found(db, "first", "words") == [f"m_{2:028d}", f"m_{1:028d}"]
    assert await found(db, "first", room_id=room_id) == [f"m_{1:028d}"]
    await execute(
        db, "UPDATE city_room_messages SET body = 'second words' WHERE id = :id", id=f"m_{1:028d}"
    )
    assert await found(db, "first") == [f"m_{2:028d}"]
    assert await found(db, "second", "words") == [f"m_{1:028d}"]
    await execute(
        db, "UPDATE city_room_messages SET reactions = '[]' WHERE id = :id", id=f"m_{1:028d}"
    )
    assert await found(db, "second") == [f"m_{1:028d}"]
    await execute(
        db,
        "UPDATE city_room_messages SET deleted = true, body = '' WHERE id = :id",
        id=f"m_{1:028d}",
    )
    assert await found(db, "second") == []
    await execute(
        db,
        "UPDATE city_room_messages SET deleted = false, body = 'back' WHERE id = :id",
        id=f"m_{1:028d}",
    )
    assert await found(db, "back") == [f"m_{1:028d}"]
    await execute(db, "DELETE FROM city_room_messages WHERE id = :id", id=f"m_{2:028d}")
    assert await found(db, "first") == []
    assert await found(db, "back") == [f"m_{1:028d}"]


def test_query_texts_quote_every_word() -> None:
    assert search.fts_query(['a"b', "c"], None) == 'body : ("a""b" AND "c"*)'
    assert search.fts_query(["w"], 'r"1') == 'room_id : "r""1" AND body : ("w"*)'
    assert search.ts_query(["it's", "a\\b"]) == "'it''s' & 'a\\\\b':*"
    assert search.fts_query(["a", "b"], None, []) == 'body : ("a" AND "b")'
    assert search.fts_query(["a", "b"], None, ["bc"]) == 'body : ("a" AND ("b" OR "bc"))'


async def test_a_prefix_stands_for_the_longer_terms_or_is_left_to_fts5(db: Database) -> None:
    """The last word's longer terms come from the index's vocabulary (up to MAX_LONGER of them,
    else FTS5's own prefix query): either way every term that begins with it is found."""
    room_id = await a_room(db)
    await insert(db, room_id, 1, "alpha")
    await insert(db, room_id, 2, "alphabet soup")
    await insert(db, room_id, 3, "alp")
    for seq in range(4, 4 + search.MAX_LONGER + 2):
        await insert(db, room_id, seq, f"zeta{seq}")
    assert await found(db, "alp") == [f"m_{s:028d}" for s in (3, 2, 1)]
    assert await found(db, "alpha") == [f"m_{s:028d}" for s in (2, 1)]
    assert await found(db, "alphab") == [f"m_{2:028d}"]
    assert await found(db, "soup", "alpha") == [f"m_{2:028d}"]
    assert len(await found(db, "zeta")) == search.MAX_LONGER + 2
