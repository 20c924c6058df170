"""What the benchmark scripts share: the servers they use, scratch databases and key prefixes,
and percentiles."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

PG = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-0123456789-0123456789-abc"


@dataclass(frozen=True)
class Scratch:
    database_url: str
    redis_prefix: str


@contextlib.asynccontextmanager
async def scratch(name: str) -> AsyncIterator[Scratch]:
    """A PostgreSQL database and a Redis key prefix of the run's own, removed afterwards."""
    db = f"bench_{name}_{secrets.token_hex(4)}"
    prefix = f"bench_{name}_{secrets.token_hex(3)}:"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        yield Scratch(PG.rsplit("/", 1)[0] + "/" + db, prefix)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        client = aioredis.Redis.from_url(REDIS)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# The service's abuse limits are for people; a load generator is a script by design, from one
# address. Every benchmark runs the service with these lifted.
UNLIMITED = {
    "CITY_MESSAGE_RATE": "1000000",
    "CITY_MESSAGE_BURST": "1000000",
    "CITY_ROOM_CREATE_RATE": "1000",
    "CITY_ROOM_CREATE_BURST": "1000",
    "CITY_WS_CONNECT_RATE": "1000000",
    "CITY_WS_CONNECT_BURST": "1000000",
    "CITY_GUEST_RATE": "1000000",
    "CITY_GUEST_BURST": "1000000",
    "PRESENCE_WRITE_RATE": "1000000",
    "PRESENCE_WRITE_BURST": "1000000",
    "SECONDME_TOKEN_RATE": "1000000",
    "SECONDME_TOKEN_BURST": "1000000",
}
