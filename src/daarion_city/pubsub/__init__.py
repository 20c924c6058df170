"""Cross-instance fan-out: one small Protocol, implementations named by backend."""

from __future__ import annotations

from daarion_city.pubsub.base import BUS, Handler, PubSub
from daarion_city.pubsub.memory import MemoryPubSub


def create_pubsub(redis_url: str, prefix: str = "") -> PubSub:
    """In-process fan-out without a URL (one instance); Redis pub/sub with ``redis://``."""
    if not redis_url:
        return MemoryPubSub()
    from daarion_city.pubsub.redis import RedisPubSub

    bus: PubSub = RedisPubSub(redis_url, prefix=prefix)
    return bus


__all__ = ["BUS", "Handler", "MemoryPubSub", "PubSub", "create_pubsub"]
