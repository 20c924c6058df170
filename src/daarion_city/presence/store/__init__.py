"""Presence stores: in-process (one instance) and Redis (a cluster), behind one Protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daarion_city.presence.store.base import PresenceStore
from daarion_city.presence.store.memory import MemoryPresenceStore

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def create_presence_store(
    redis: aioredis.Redis | None, *, ttl: float, prefix: str = ""
) -> PresenceStore:
    """In process without Redis (one instance); shared in Redis with it. ``ttl``: seconds a
    connection stays live after its last heartbeat."""
    if redis is None:
        return MemoryPresenceStore(ttl)
    from daarion_city.presence.store.redis import RedisPresenceStore

    store: PresenceStore = RedisPresenceStore(redis, ttl=ttl, prefix=prefix)
    return store


__all__ = ["MemoryPresenceStore", "PresenceStore", "create_presence_store"]
