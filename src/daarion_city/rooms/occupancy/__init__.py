"""Room occupancy: one Protocol, implementations named by backend (see ``base.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daarion_city.rooms.occupancy.base import Departure, RoomOccupancy
from daarion_city.rooms.occupancy.memory import MemoryRoomOccupancy

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def create_occupancy(
    redis: aioredis.Redis | None, *, instance_id: str, ttl: float, prefix: str = ""
) -> RoomOccupancy:
    """In process without Redis (one instance); shared in Redis with it, where ``instance_id``
    owns this process's sockets and ``ttl`` is how long it counts as alive after ``maintain``."""
    if redis is None:
        return MemoryRoomOccupancy()
    from daarion_city.rooms.occupancy.redis import RedisRoomOccupancy

    occupancy: RoomOccupancy = RedisRoomOccupancy(
        redis, instance_id=instance_id, ttl=ttl, prefix=prefix
    )
    return occupancy


__all__ = ["Departure", "MemoryRoomOccupancy", "RoomOccupancy", "create_occupancy"]
