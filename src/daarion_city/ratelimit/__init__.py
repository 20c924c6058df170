"""Rate limits: one Protocol, implementations named by backend (see ``base.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daarion_city.ratelimit.base import LIMITER, RateLimiter
from daarion_city.ratelimit.memory import MemoryRateLimiter

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def create_rate_limiter(redis: aioredis.Redis | None, *, prefix: str = "") -> RateLimiter:
    """In-process buckets without Redis (one instance); buckets in Redis, shared, with it."""
    if redis is None:
        return MemoryRateLimiter()
    from daarion_city.ratelimit.redis import RedisRateLimiter

    limiter: RateLimiter = RedisRateLimiter(redis, prefix=prefix)
    return limiter


__all__ = ["LIMITER", "MemoryRateLimiter", "RateLimiter", "create_rate_limiter"]
