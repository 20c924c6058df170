"""Fixtures: every app-level test runs on SQLite and on the real PostgreSQL of this machine.

PostgreSQL: one migrated template database per session; each test gets a copy
(``CREATE DATABASE ... TEMPLATE``) that is dropped afterwards. ``TEST_POSTGRES_URL`` names the
server (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daarion_city.config import Settings
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate
from tests.cluster import RedisServer
from tests.support import Api, Server, run_server

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"dc_test_{os.getpid()}_"


def _db_url(name: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + name


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = PREFIX + "template"

    async def create() -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{name}"')
        await _admin(f'CREATE DATABASE "{name}"')
        db = Database(_db_url(name).replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await migrate(db)
        finally:
            await db.dispose()

    async def drop_all() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", PREFIX + "%"
            )
            for row in rows:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()

    # In a thread of its own: this fixture may be first asked for from inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
        yield name
        pool.submit(asyncio.run, drop_all()).result()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'city.sqlite3'}"
        return
    template = request.getfixturevalue("pg_template")
    name = PREFIX + secrets.token_hex(6)
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _db_url(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": "",
        "city_data_dir": data_dir,
        "city_jwt_secret": "test-secret-0123456789abcdef-0123456789",
        "city_message_rate": 1000.0,
        "city_message_burst": 1000,
        "city_room_create_rate": 1000.0,
        "city_room_create_burst": 1000,
        # Tests sign up many guests and open many sockets from 127.0.0.1 in a burst; the tests
        # of these limits set them back.
        "city_guest_rate": 1000.0,
        "city_guest_burst": 10_000,
        "city_ws_connect_rate": 10_000.0,
        "city_ws_connect_burst": 100_000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Tests override settings by redefining this fixture or by parametrising it indirectly."""
    return {}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(database_url, tmp_path / "data", **settings_overrides)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with run_server(settings) as srv:
        yield srv


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    client = Api(server)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the machine's Redis, cleaned afterwards."""
    import redis.asyncio as aioredis

    prefix = f"t{os.getpid()}_{secrets.token_hex(4)}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server of this test's own (it may be stopped and started)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
