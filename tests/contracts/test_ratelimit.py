"""The rate limiter contract (``ratelimit/base.py``), in process and on the real Redis.

Time passes on a fake clock in process and on Redis' own clock in Redis, so the refill tests use
rates fast enough that waiting for a token takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from daarion_city.core.clock import FakeClock
from daarion_city.core.errors import RateLimited
from daarion_city.ratelimit import MemoryRateLimiter, RateLimiter, create_rate_limiter
from daarion_city.ratelimit.redis import RedisRateLimiter
from tests.cluster import free_port
from tests.conftest import REDIS_URL


class Limiter:
    """A limiter under test, and a way to let time pass for it."""

    def __init__(self, limiter: RateLimiter, wait: Callable[[float], Awaitable[None]]) -> None:
        self.limiter = limiter
        self.wait = wait

    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        await self.limiter.hit(key, rate=rate, burst=burst, cost=cost)

    async def refused(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> float:
        """The hit is refused: its ``retry_after``."""
        with pytest.raises(RateLimited) as info:
            await self.limiter.hit(key, rate=rate, burst=burst, cost=cost)
        return info.value.retry_after


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        yield Limiter(MemoryRateLimiter(clock), advance)
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    made = create_rate_limiter(client, prefix=redis_prefix)
    assert isinstance(made, RedisRateLimiter)
    try:
        yield Limiter(made, asyncio.sleep)
    finally:
        await made.close()
        await client.aclose()


def test_the_factory_without_redis_keeps_buckets_in_process() -> None:
    assert isinstance(create_rate_limiter(None), MemoryRateLimiter)


async def test_a_burst_then_a_refusal_with_retry_after(limiter: Limiter) -> None:
    for _ in range(3):
        await limiter.hit("msg:u1", rate=0.01, burst=3)
    assert 90 < await limiter.refused("msg:u1", rate=0.01, burst=3) <= 100
    # A refused hit takes nothing: the wait does not grow.
    assert 90 < await limiter.refused("msg:u1", rate=0.01, burst=3) <= 100
    await limiter.hit("msg:u2", rate=0.01, burst=3)  # another key, another bucket


async def test_a_cost_takes_that_many_tokens(limiter: Limiter) -> None:
    await limiter.hit("sm:u1", rate=1.0, burst=10, cost=8)
    assert 5 < await limiter.refused("sm:u1", rate=1.0, burst=10, cost=8) <= 6
    await limiter.hit("sm:u1", rate=1.0, burst=10, cost=2)  # the two left


async def test_the_bucket_refills_at_its_rate_up_to_its_burst(limiter: Limiter) -> None:
    await limiter.hit("k", rate=10.0, burst=2)
    await limiter.hit("k", rate=10.0, burst=2)
    wait = await limiter.refused("k", rate=10.0, burst=2)
    assert 0 < wait <= 0.1
    await limiter.wait(wait + 0.02)
    await limiter.hit("k", rate=10.0, burst=2)
    # A long rest refills the bucket to its burst, never beyond.
    await limiter.wait(0.3)
    await limiter.hit("k", rate=10.0, burst=2)
    await limiter.hit("k", rate=10.0, burst=2)
    assert 0 < await limiter.refused("k", rate=10.0, burst=2) <= 0.1


async def test_hits_at_once_are_each_counted(limiter: Limiter) -> None:
    """Hits at once (in Redis they share one call of the script) are each counted: of ten
    concurrent hits on a bucket of four, exactly four pass; buckets of several sizes in one
    call keep their own counts."""
    results = await asyncio.gather(
        *(limiter.hit("msg:u3", rate=0.01, burst=4) for _ in range(10)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 4
    assert all(r is None or isinstance(r, RateLimited) for r in results)
    mixed = await asyncio.gather(
        *(limiter.hit(f"msg:u5{i % 2}", rate=0.01, burst=1 + i % 2) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(r is None for r in mixed[0::2]) == 1  # burst 1
    assert sum(r is None for r in mixed[1::2]) == 2  # burst 2


async def test_a_verdict_is_the_hits_answer_as_a_future(limiter: Limiter) -> None:
    """``verdict`` (a post asks its limit while it waits for its commit) answers as ``hit``."""
    first = limiter.limiter.verdict("msg:u6", rate=0.01, burst=2)
    second = limiter.limiter.verdict("msg:u6", rate=0.01, burst=2)
    third = limiter.limiter.verdict("msg:u6", rate=0.01, burst=2)
    assert await first is None
    assert await second is None
    with pytest.raises(RateLimited) as info:
        await third
    assert 90 < info.value.retry_after <= 100


# --- Redis only -------------------------------------------------------------------------------


async def test_redis_buckets_are_shared_by_every_instance(redis_prefix: str) -> None:
    a_client = aioredis.Redis.from_url(REDIS_URL)
    b_client = aioredis.Redis.from_url(REDIS_URL)
    a = RedisRateLimiter(a_client, prefix=redis_prefix)
    b = RedisRateLimiter(b_client, prefix=redis_prefix)
    try:
        await a.hit("msg:u1", rate=0.01, burst=3)
        await b.hit("msg:u1", rate=0.01, burst=3)
        await a.hit("msg:u1", rate=0.01, burst=3)
        with pytest.raises(RateLimited) as info:
            await b.hit("msg:u1", rate=0.01, burst=3)  # the fourth, on the other instance
        assert 90 < info.value.retry_after <= 100
        await b.hit("msg:u2", rate=0.01, burst=3)  # another key, another bucket
        # A cost larger than one token (Second Me) takes that many.
        await a.hit("sm:u1", rate=1.0, burst=10, cost=8)
        with pytest.raises(RateLimited) as info:
            await b.hit("sm:u1", rate=1.0, burst=10, cost=8)
        assert 5 < info.value.retry_after <= 6.1
        # The bucket expires once it would be full again: nothing is left behind.
        ttl = await a_client.pttl(f"{redis_prefix}ratelimit:msg:u1")
        assert 0 < ttl <= 301_000
        # Redis forgot its scripts (a restart, SCRIPT FLUSH): the limiter loads it again.
        await a_client.script_flush()
        await a.hit("msg:u4", rate=0.01, burst=1)
        with pytest.raises(RateLimited):
            await a.hit("msg:u4", rate=0.01, burst=1)
    finally:
        await a.close()
        await b.close()
        await a_client.aclose()
        await b_client.aclose()


async def test_the_redis_buckets_live_in_the_clients_database(redis_prefix: str) -> None:
    """A limiter on a client of another database keeps its buckets there."""
    client = aioredis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3")
    limiter = RedisRateLimiter(client, prefix=redis_prefix)
    key = f"{redis_prefix}ratelimit:msg:db3"
    try:
        await limiter.hit("msg:db3", rate=0.01, burst=3)
        assert await client.exists(key) == 1
        other = aioredis.Redis.from_url(REDIS_URL)
        assert await other.exists(key) == 0 or REDIS_URL.endswith("/3")
        await other.aclose()
    finally:
        await client.delete(key)
        await limiter.close()
        await client.aclose()


async def test_a_redis_bucket_expires_once_it_has_refilled(redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    limiter = RedisRateLimiter(client, prefix=redis_prefix)
    try:
        # One token of three taken, at 0.01 a second: full again in 100 s, not 300.
        await limiter.hit("guest:1.2.3.4", rate=0.01, burst=3)
        assert 99_000 < await client.pttl(f"{redis_prefix}ratelimit:guest:1.2.3.4") <= 101_000
        await limiter.hit("guest:1.2.3.4", rate=0.01, burst=3)
        assert 199_000 < await client.pttl(f"{redis_prefix}ratelimit:guest:1.2.3.4") <= 201_000
    finally:
        await limiter.close()
        await client.aclose()


async def test_a_redis_that_is_down_leaves_limits_per_instance() -> None:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    limiter = RedisRateLimiter(client)
    try:
        await limiter.hit("k", rate=0.01, burst=2)
        await limiter.hit("k", rate=0.01, burst=2)
        with pytest.raises(RateLimited):
            await limiter.hit("k", rate=0.01, burst=2)
    finally:
        await limiter.close()
        await client.aclose()
