"""Token buckets in Redis, shared by every instance.

A Lua script, timed by Redis' own clock so instances with skewed clocks agree. The limiter sends
the hits that arrive while its previous round trip is out as one call of the script (as the
rooms' group commit does for posts): under load many hits share a round trip, and a lone hit goes
out at once. The calls go on a lean connection of their own (``core/resp.RespClient``: the
``EVALSHA`` packed by hand, its reply read with hiredis; redis-py's script call cost a post more
than Redis did), and ``verdict`` asks without a task per hit. When Redis does not answer, it
falls back to its in-process buckets and logs it: a limiter outage must not stop the city (the
limits then hold per instance), the way Envoy's and Discord's limiters fail open.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from daarion_city.core.errors import RateLimited
from daarion_city.core.resp import RespClient, command, options_of, refused
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
SHA = hashlib.sha1(TAKE.encode()).hexdigest().encode()
# Hits per script call: bounds how long one call holds Redis.
MAX_HITS_PER_CALL = 500
_DOWN = (RedisError, OSError, TimeoutError)

_Hit = tuple[str, float, int, float]  # the key (without the prefix); rate, burst, cost


class RedisRateLimiter:
    """Buckets in Redis under ``{prefix}ratelimit:{key}``, gone once full again (PEXPIRE of the
    time to refill, set by the same script call)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "",
        fallback: MemoryRateLimiter | None = None,
    ) -> None:
        self._prefix = prefix
        # The client's own bound on a reply (``socket_timeout``) bounds a script call too.
        options = options_of(redis)
        self._client = RespClient(options, timeout=options.get("socket_timeout") or 2.0)
        self._fallback = fallback or MemoryRateLimiter()
        self._down_logged = False
        self._tasks = TaskSet("ratelimit")
        # The hits that arrive while a script call runs share the next one.
        self._hits: Batcher[_Hit, None] = Batcher(
            self._take, self._tasks, name="ratelimit-send", max_batch=MAX_HITS_PER_CALL
        )

    async def hit(self, key: str, *, rate: float, burst: int, cost: float = 1.0) -> None:
        await self._hits.enqueue((key, rate, burst, cost))

    def verdict(
        self, key: str, *, rate: float, burst: int, cost: float = 1.0
    ) -> asyncio.Future[None]:
        return self._hits.enqueue((key, rate, burst, cost))

    async def _take(self, batch: list[_Hit]) -> list[BaseException | None]:
        """One script call: each hit allowed (None) or refused (``RateLimited``); with Redis
        down, the in-process buckets answer."""
        try:
            waits = await self._call(batch)
        except _DOWN as exc:
            if not self._down_logged:
                log.warning("rate limits held per instance while Redis is unavailable: %r", exc)
                self._down_logged = True
            return [self._fallback_verdict(hit) for hit in batch]
        self._down_logged = False
        return [None if wait <= 0 else RateLimited(wait) for wait in waits]

    async def _call(self, batch: list[_Hit]) -> list[float]:
        prefix = self._prefix.encode()
        keys = [prefix + b"ratelimit:" + key.encode() for key, _, _, _ in batch]
        args = [repr(float(a)).encode() for _, *hit_args in batch for a in hit_args]
        evalsha = command(b"EVALSHA", SHA, b"%d" % len(keys), *keys, *args)
        (reply,) = await self._client.pipeline([evalsha])
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            # Redis lost the script (a restart, SCRIPT FLUSH): loaded again, then called.
            _, reply = await self._client.pipeline(
                [command(b"SCRIPT", b"LOAD", TAKE.encode()), evalsha]
            )
        if (error := refused(reply)) is not None:
            raise error
        return [float(wait) for wait in reply]

    def _fallback_verdict(self, hit: _Hit) -> BaseException | None:
        key, rate, burst, cost = hit
        wait = self._fallback.wait(key, rate=rate, burst=int(burst), cost=cost)
        return RateLimited(wait) if wait > 0 else None

    async def close(self) -> None:
        await self._tasks.close()
        self._client.close()
