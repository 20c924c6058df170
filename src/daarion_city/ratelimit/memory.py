"""Token buckets in process, for one instance (and the Redis limiter's fallback)."""

from __future__ import annotations

import asyncio

from daarion_city.core.clock import Clock, system_clock
from daarion_city.core.errors import RateLimited
from daarion_city.ratelimit.base import Bucket, take


class MemoryRateLimiter:
    """Buckets in process (one instance). Idle full buckets are forgotten to bound memory."""

    def __init__(self, clock: Clock = system_clock, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        self.check(key, rate=rate, burst=burst, cost=cost)

    def verdict(
        self, key: str, *, rate: float, burst: int, cost: float = 1.0
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if (wait := self.wait(key, rate=rate, burst=burst, cost=cost)) > 0:
            future.set_exception(RateLimited(wait))
        else:
            future.set_result(None)
        return future

    async def close(self) -> None:
        return None  # nothing runs in the background

    def check(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        if (wait := self.wait(key, rate=rate, burst=burst, cost=cost)) > 0:
            raise RateLimited(wait)

    def wait(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0, or the seconds to wait (nothing taken). No exception and
        no await, for hot paths (a presence socket's heartbeats)."""
        now = self._clock()
        bucket, wait = take(self._buckets.get(key), rate=rate, burst=burst, now=now, cost=cost)
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._evict(now, rate, burst)
        self._buckets[key] = bucket
        return wait

    def _evict(self, now: float, rate: float, burst: int) -> None:
        full_after = burst / rate
        for key, bucket in list(self._buckets.items()):
            if now - bucket.updated >= full_after:
                del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()
