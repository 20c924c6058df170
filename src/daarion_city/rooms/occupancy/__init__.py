"""Room occupancy: one Protocol, implementations named by backend (see ``base.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daarion_city.rooms.occupancy.base import Crowd, Departure, Occupied, RoomOccupancy, Roster
from daarion_city.rooms.occupancy.memory import MemoryRoomOccupancy

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def create_occupancy(
    redis: aioredis.Redis | None,
    *,
    instance_id: str,
    ttl: float,
    prefix: str = "",
    large_room: int = 200,
) -> RoomOccupancy:
    """In process without Redis (one instance); shared in Redis with it, where ``instance_id``
    owns this process's sockets and ``ttl`` is how long it counts as alive after ``maintain``.
    ``large_room`` is ``CITY_LARGE_ROOM``, the threshold of the rooms' large mode."""
    if redis is None:
        return MemoryRoomOccupancy(large_room)
    from daarion_city.rooms.occupancy.redis import RedisRoomOccupancy

    occupancy: RoomOccupancy = RedisRoomOccupancy(
        redis, instance_id=instance_id, ttl=ttl, prefix=prefix, large_room=large_room
    )
    return occupancy


__all__ = [
    "Crowd",
    "Departure",
    "MemoryRoomOccupancy",
    "Occupied",
    "RoomOccupancy",
    "Roster",
    "create_occupancy",
]
