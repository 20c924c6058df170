"""Token-bucket rate limits, pure functions of ``now``.

A bucket of ``burst`` tokens refills at ``rate`` tokens per second; each action takes one. When it
is empty the caller is told how long until the next token (``Retry-After``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from daarion_city.clock import Clock, system_clock
from daarion_city.errors import RateLimited


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
    async def hit(self, key: str, *, rate: float, burst: int) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited`."""
        ...


class MemoryRateLimiter:
    """Buckets in process (one instance). Idle full buckets are forgotten to bound memory."""

    def __init__(self, clock: Clock = system_clock, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, *, rate: float, burst: int) -> None:
        now = self._clock()
        bucket, wait = take(self._buckets.get(key), rate=rate, burst=burst, now=now)
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._evict(now, rate, burst)
        self._buckets[key] = bucket
        if wait > 0:
            raise RateLimited(wait)

    def _evict(self, now: float, rate: float, burst: int) -> None:
        full_after = burst / rate
        for key, bucket in list(self._buckets.items()):
            if now - bucket.updated >= full_after:
                del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()
