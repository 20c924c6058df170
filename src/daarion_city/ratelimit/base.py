"""Token-bucket rate limits: the rule every limiter applies and the Protocol they share.

A bucket of ``burst`` tokens refills at ``rate`` tokens per second; each action takes ``cost``
(one, or a Second Me ask's token estimate). When it is short the caller is told how long until
enough has refilled (``Retry-After``).

Two limiters behind one Protocol: :class:`~daarion_city.ratelimit.memory.MemoryRateLimiter`
(one process) and :class:`~daarion_city.ratelimit.redis.RedisRateLimiter` (shared by every
instance). Guarantees every limiter keeps:

- atomic per key: a hit reads the bucket, refills it for the time passed, and takes ``cost`` (or
  nothing) in one step; concurrent hits on one key never both spend the same token. A bucket
  never holds more than ``burst`` tokens, however long it rested, and a refused hit takes nothing;
- ``retry_after`` of the :class:`~daarion_city.core.errors.RateLimited` raised is the seconds until
  ``cost`` tokens will have refilled: ``(cost - tokens) / rate``;
- keys are independent; a missing bucket is a full one, so forgetting a full bucket changes
  nothing. In memory, idle full buckets are dropped only when ``max_keys`` is reached; in Redis
  a bucket expires a second after it would be full again;
- Redis down: the Redis limiter answers from its in-process buckets (it fails open to per-instance
  limits and logs the outage once), so a limiter outage never stops the city.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from daarion_city.core.provided import Key


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

    def verdict(
        self, key: str, *, rate: float, burst: int, cost: float = 1.0
    ) -> asyncio.Future[None]:
        """``hit`` as a future, with no task of its own (a post's limit is asked while the post
        waits for its commit): done with None, or with :class:`RateLimited`."""
        ...

    async def close(self) -> None:
        """Stop background work (hits still waiting are answered or failed first)."""
        ...


LIMITER: Key[RateLimiter] = Key("limiter")
