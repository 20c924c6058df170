"""Token-bucket rate limits.

A bucket of ``burst`` tokens refills at ``rate`` tokens per second; each action takes ``cost``
(one, or a Second Me ask's token estimate). When it is short the caller is told how long until
enough has refilled (``Retry-After``).

Two limiters behind one Protocol: :class:`MemoryRateLimiter` (one process) and
:class:`RedisRateLimiter` (shared by every instance: a Lua script, timed by Redis'
own clock so instances with skewed clocks agree). The Redis limiter sends the hits that arrive
while its previous round trip is out as one call of the script (as the rooms' group commit does
for posts): under load many hits share a round trip, and a lone hit goes out at once. When Redis
does not answer, it falls back to its in-process buckets and logs it: a limiter outage must
not stop the city (the limits then hold per instance), the way Envoy's and Discord's limiters
fail open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from daarion_city.clock import Clock, system_clock
from daarion_city.errors import RateLimited
from daarion_city.tasks import Batcher, TaskSet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


def take(
    bucket: Bucket | None, *, rate: float, burst: int, now: float, cost: float = 1.0
) -> tuple[Bucket, float]:
    """Take ``cost`` tokens. Returns the new bucket and 0.0, or the old bucket (refilled) and the
    seconds to wait."""
    if bucket is None:
        bucket = Bucket(float(burst), now)
    tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.updated) * rate)
    if tokens >= cost:
        return Bucket(tokens - cost, now), 0.0
    return Bucket(tokens, now), (cost - tokens) / rate


class RateLimiter(Protocol):
    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` or raise :class:`RateLimited`."""
        ...

    async def close(self) -> None:
        """Stop background work (hits still waiting are answered or failed first)."""
        ...


class MemoryRateLimiter:
    """Buckets in process (one instance). Idle full buckets are forgotten to bound memory."""

    def __init__(self, clock: Clock = system_clock, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        self.check(key, rate=rate, burst=burst, cost=cost)

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


# KEYS the buckets; ARGV rate, burst, cost for each, in turn. Takes from each in order (a key
# named twice sees its first take) and returns the seconds to wait for each ("0": taken) as text
# (a Lua number would be truncated to an integer on its way out). A bucket expires a second after
# it would be full again (a missing bucket is a full one), so no bucket outlives its use.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local waits = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 2])
  local burst, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local b = redis.call('HMGET', key, 't', 'u')
  local tokens, updated = tonumber(b[1]) or burst, tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  local wait = 0
  if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
  redis.call('HSET', key, 't', tostring(tokens), 'u', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  waits[i] = tostring(wait)
end
return waits
"""
# Hits per script call: bounds how long one call holds Redis.
MAX_HITS_PER_CALL = 500


_Hit = tuple[str, tuple[float, int, float]]  # the bucket's key; rate, burst, cost


class RedisRateLimiter:
    """Buckets in Redis under ``{prefix}ratelimit:{key}``, gone once full again (PEXPIRE of the
    time to refill, set by the same script call)."""

    def __init__(
        self, redis: aioredis.Redis, *, prefix: str = "", fallback: MemoryRateLimiter | None = None
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(TAKE)
        self._fallback = fallback or MemoryRateLimiter()
        self._down_logged = False
        self._tasks = TaskSet("ratelimit")
        # The hits that arrive while a script call runs share the next one.
        self._hits: Batcher[_Hit, float] = Batcher(
            self._take, self._tasks, name="ratelimit-send", max_batch=MAX_HITS_PER_CALL
        )

    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        try:
            wait = await self._hits.submit((f"{self._prefix}ratelimit:{key}", (rate, burst, cost)))
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._down_logged:
                log.warning("rate limits held per instance while Redis is unavailable: %r", exc)
                self._down_logged = True
            self._fallback.check(key, rate=rate, burst=burst, cost=cost)
            return
        self._down_logged = False
        if wait > 0:
            raise RateLimited(wait)

    async def _take(self, batch: list[_Hit]) -> list[float | BaseException]:
        """One script call: the seconds each hit must wait (0 when it was allowed)."""
        # redis-py's Script loads itself again when Redis lost it (a restart, SCRIPT FLUSH).
        args = [arg for _, hit_args in batch for arg in hit_args]
        waits = await self._script(keys=[key for key, _ in batch], args=args)
        return [float(w.decode() if isinstance(w, bytes) else w) for w in waits]

    async def close(self) -> None:
        await self._tasks.close()
