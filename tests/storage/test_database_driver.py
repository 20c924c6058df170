"""``Database.driver``: the hot path's statement on asyncpg's own connection fails the way the
rest of the city's statements do (PostgreSQL only: SQLite has no such path)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError

from daarion_city.core.errors import Unavailable
from daarion_city.storage.database import Database


@pytest.fixture
def backend() -> str:
    return "postgresql"


async def test_a_statement_commits_by_itself(db: Database) -> None:
    async with db.driver() as conn:
        await conn.execute("CREATE TABLE driver_probe (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO driver_probe VALUES (1)")
    async with db.read() as conn:  # another connection sees it: no transaction was left open
        assert (await conn.exec_driver_sql("SELECT count(*) FROM driver_probe")).scalar() == 1


async def test_a_refused_row_is_an_integrity_error(db: Database) -> None:
    async with db.driver() as conn:
        await conn.execute("CREATE TABLE driver_unique (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO driver_unique VALUES (1)")
    with pytest.raises(IntegrityError):
        async with db.driver() as conn:
            await conn.execute("INSERT INTO driver_unique VALUES (1)")
    async with db.driver() as conn:  # the connection is fine for the next statement
        assert await conn.fetchval("SELECT count(*) FROM driver_unique") == 1


async def test_a_lost_connection_is_unavailable_and_leaves_the_pool(db: Database) -> None:
    lost: list[int] = []

    async def on_a_connection_that_dies() -> None:
        async with db.driver() as conn:
            lost.append(conn.get_server_pid())
            async with db.read() as other:
                await other.exec_driver_sql(f"SELECT pg_terminate_backend({lost[0]})")
            await conn.fetchval("SELECT 1")

    with pytest.raises(Unavailable):
        await on_a_connection_that_dies()
    for _ in range(25):  # more than the pool holds: the dead connection is never handed out
        async with db.driver() as conn:
            assert conn.get_server_pid() != lost[0]
            assert await conn.fetchval("SELECT 1") == 1


async def test_a_database_that_cannot_serve_is_unavailable(db: Database) -> None:
    async def cancelled_by_the_server() -> None:  # 57014, as an operator's cancel would be
        async with db.driver() as conn:
            await conn.execute("SET statement_timeout = 10")
            try:
                await conn.execute("SELECT pg_sleep(1)")
            finally:
                await conn.execute("RESET statement_timeout")

    with pytest.raises(Unavailable):
        await cancelled_by_the_server()


async def test_a_connection_ended_in_mid_statement_is_never_reused(db: Database) -> None:
    """A shutdown's end of a connection while its statement runs (what a PostgreSQL stopped
    under load does): ``Unavailable``, and no later statement meets that connection."""
    pids: list[int] = []

    async def in_mid_statement() -> None:
        async with db.driver() as conn:
            pids.append(conn.get_server_pid())
            running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(5)"))
            await asyncio.sleep(0.2)
            async with db.read() as other:
                await other.exec_driver_sql(f"SELECT pg_terminate_backend({pids[0]})")
            await running

    with pytest.raises(Unavailable):
        await in_mid_statement()
    for _ in range(25):
        async with db.driver() as conn:
            assert conn.get_server_pid() != pids[0]
            assert await conn.fetchval("SELECT 1") == 1
