"""Token buckets in Redis, shared by every instance.

A Lua script, timed by Redis' own clock so instances with skewed clocks agree. The limiter sends
the hits that arrive while its previous round trip is out as one call of the script (as the
rooms' group commit does for posts): under load many hits share a round trip, and a lone hit goes
out at once. When Redis does not answer, it falls back to its in-process buckets and logs it: a
limiter outage must not stop the city (the limits then hold per instance), the way Envoy's and
Discord's limiters fail open.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from daarion_city.core.errors import RateLimited
from daarion_city.core.tasks import Batcher, TaskSet
from daarion_city.ratelimit.memory import MemoryRateLimiter

log = logging.getLogger(__name__)

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
