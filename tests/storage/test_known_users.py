"""The users the city knows (``storage/unread.add_known``, ``identity/known.KnownUsers``) on SQLite
and PostgreSQL: batches of thousands of users, with users repeated inside a batch and across
batches, keep one row per user and its first sighting."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from daarion_city.identity.known import KnownUsers
from daarion_city.identity.principal import Principal
from daarion_city.storage import unread as store
from daarion_city.storage.database import Database
from daarion_city.storage.tables import known_users
from tests.storage.conftest import now


async def rows(db: Database) -> dict[str, tuple[str, object]]:
    async with db.begin() as conn:
        result = await conn.execute(sa.select(known_users))
        return {r.user_id: (r.name, r.first_seen) for r in result}


async def test_a_batch_of_thousands_with_repeats_keeps_one_row_per_user(db: Database) -> None:
    first, later = now(), now() + timedelta(hours=1)
    batch = [(f"u_{i:06d}", f"User {i}") for i in range(3000)]
    batch += [(f"u_{i:06d}", "Again") for i in range(0, 3000, 7)]  # repeated in the batch
    batch.append(("u_long", "L" * 150))
    async with db.begin() as conn:
        await store.add_known(conn, batch, first)
    second = [(f"u_{i:06d}", "Renamed") for i in range(2500, 4000)]  # half of them known
    async with db.begin() as conn:
        await store.add_known(conn, second, later)
        await store.add_known(conn, [], later)  # nothing to write

    seen = await rows(db)
    assert len(seen) == 4001
    assert seen["u_long"][0] == "L" * 100
    for i in range(4000):
        name, first_seen = seen[f"u_{i:06d}"]
        if i < 3000:  # the first batch's sighting stays
            assert name in (f"User {i}", "Again"), i
            assert first_seen == first, i
        else:
            assert (name, first_seen) == ("Renamed", later), i
    async with db.begin() as conn:
        asked = [f"u_{i:06d}" for i in range(3990, 4010)] + ["u_000000", "u_000000"]
        assert await store.known(conn, asked) == {f"u_{i:06d}" for i in range(3990, 4000)} | {
            "u_000000"
        }


async def test_known_users_write_each_user_noted_once(db: Database) -> None:
    known = KnownUsers(db)
    try:
        for _ in range(2):  # every user twice: the second note is a no-op
            for i in range(5000):
                known.note(Principal(f"u_{i:06d}", f"User {i}", False))
        await known.settled()
    finally:
        await known.close()
    seen = await rows(db)
    assert len(seen) == 5000
    assert seen["u_004999"][0] == "User 4999"
