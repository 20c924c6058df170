"""The presence store contract (``presence/store/base.py``): in-process, and the real Redis of
this machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from daarion_city.core.clock import FakeClock
from daarion_city.core.errors import Unavailable
from daarion_city.presence.store import (
    MemoryPresenceStore,
    PresenceStore,
    create_presence_store,
)
from daarion_city.presence.store.redis import RedisPresenceStore
from tests.cluster import free_port
from tests.conftest import REDIS_URL

TTL = 40.0


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[PresenceStore]:
    if request.param == "memory":
        made = create_presence_store(None, ttl=TTL)
        assert isinstance(made, MemoryPresenceStore)
        yield made
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        made = create_presence_store(client, ttl=TTL, prefix=redis_prefix)
        assert isinstance(made, RedisPresenceStore)
        yield made
    finally:
        await client.aclose()


async def test_online_once_then_no_change(store: PresenceStore) -> None:
    clock = FakeClock()
    t = await store.set_online("u_a", "Alice", "c1", now=clock())
    assert (t.old, t.new, t.name) == ("offline", "online", "Alice")
    clock.advance(15)
    t = await store.refresh_ttl("u_a", "Alice", "c1", now=clock())
    assert not t.changed
    assert await store.is_online("u_a")
    assert not await store.is_online("u_b")
    assert await store.get_online_count() == 1
    (rec,) = await store.get_all_online()
    assert (rec.user_id, rec.name, rec.new) == ("u_a", "Alice", "online")
    assert rec.last_seen == pytest.approx(clock())


async def test_away_and_back(store: PresenceStore) -> None:
    clock = FakeClock()
    await store.set_online("u_a", "A", "c1", now=clock())
    t = await store.refresh_ttl("u_a", "A", "c1", now=clock(), status="away")
    assert (t.old, t.new) == ("online", "away")
    t = await store.refresh_ttl("u_a", "A", "c1", now=clock(), status="away")
    assert not t.changed
    assert (await store.get(["u_a", "u_z"]))["u_a"].new == "away"
    t = await store.refresh_ttl("u_a", "A", "c1", now=clock(), status="online")
    assert (t.old, t.new) == ("away", "online")


async def test_multi_device(store: PresenceStore) -> None:
    clock = FakeClock()
    await store.set_online("u_a", "A", "phone", now=clock(), status="away")
    t = await store.set_online("u_a", "A", "laptop", now=clock())
    assert (t.old, t.new) == ("away", "online")
    t = await store.disconnect("u_a", "laptop", now=clock())
    assert (t.old, t.new) == ("online", "away")
    t = await store.disconnect("u_a", "phone", now=clock())
    assert (t.old, t.new) == ("away", "offline")
    assert await store.get_online_count() == 0
    assert await store.get_all_online() == []
    t = await store.disconnect("u_a", "phone", now=clock())
    assert not t.changed


async def test_ttl_expiry_is_swept_once(store: PresenceStore) -> None:
    clock = FakeClock()
    await store.set_online("u_a", "Alice", "c1", now=clock())
    await store.set_online("u_b", "Bob", "c1", now=clock() + 20)
    clock.advance(TTL - 1)
    assert await store.sweep(now=clock()) == []
    clock.advance(1.5)
    changes = await store.sweep(now=clock())
    assert [(c.user_id, c.name, c.old, c.new) for c in changes] == [
        ("u_a", "Alice", "online", "offline")
    ]
    assert await store.sweep(now=clock()) == []
    assert [u.user_id for u in await store.get_all_online()] == ["u_b"]
    assert await store.get_online_count() == 1


async def test_concurrent_sweepers_announce_each_change_once(store: PresenceStore) -> None:
    clock = FakeClock()
    for i in range(30):
        await store.set_online(f"u_{i}", f"U{i}", "c1", now=clock())
    clock.advance(TTL + 1)
    results = await asyncio.gather(*(store.sweep(now=clock()) for _ in range(4)))
    swept = [c.user_id for changes in results for c in changes]
    assert sorted(swept) == sorted(f"u_{i}" for i in range(30))


async def test_reconnect_within_the_ttl_does_not_flap(store: PresenceStore) -> None:
    clock = FakeClock()
    await store.set_online("u_a", "A", "old", now=clock())
    clock.advance(25)
    t = await store.set_online("u_a", "A", "new", now=clock())
    assert not t.changed
    clock.advance(20)  # "old" expired, "new" lives
    assert await store.sweep(now=clock()) == []
    assert await store.is_online("u_a")


async def test_an_expired_online_tab_leaves_the_away_one(store: PresenceStore) -> None:
    clock = FakeClock()
    await store.set_online("u_a", "A", "tab1", now=clock())
    clock.advance(10)
    await store.set_online("u_a", "A", "tab2", now=clock(), status="away")
    clock.advance(31)
    changes = await store.sweep(now=clock())
    assert [(c.old, c.new) for c in changes] == [("online", "away")]


async def test_redis_keys_follow_the_spec(redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        store = RedisPresenceStore(client, ttl=TTL, prefix=redis_prefix)
        import time

        await store.set_online("u_a", "A", "c1", now=time.time())
        ttl = await client.pttl(f"{redis_prefix}presence:user:u_a")
        assert 39_000 < ttl <= 40_000
    finally:
        await client.aclose()


async def test_a_sweep_takes_at_most_its_limit(store: PresenceStore) -> None:
    clock = FakeClock()
    for i in range(5):
        await store.set_online(f"u_{i}", f"U{i}", "c1", now=clock())
    clock.advance(TTL + 1)
    assert len(await store.sweep(now=clock(), limit=3)) == 3
    assert len(await store.sweep(now=clock(), limit=3)) == 2
    assert await store.get_online_count() == 0


async def test_a_redis_that_is_down_is_unavailable() -> None:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    store = RedisPresenceStore(client, ttl=TTL)
    try:
        for call in (
            store.set_online("u_a", "A", "c1", now=0.0),
            store.refresh_ttl("u_a", "A", "c1", now=0.0),
            store.disconnect("u_a", "c1", now=0.0),
            store.sweep(now=0.0),
            store.is_online("u_a"),
            store.get(["u_a"]),
            store.get_all_online(),
            store.get_online_count(),
        ):
            with pytest.raises(Unavailable):
                await call
    finally:
        await client.aclose()
