"""Room occupancy in Redis, shared by every instance (see ``base.py`` for the contract).

Keys (after the prefix): ``occ:members:{room}`` hash user -> name; ``occ:socks:{room}:{user}``
set of socket ids; ``occ:rooms:{user}`` set of rooms; ``occ:inst:{instance}`` set of this
instance's sockets (``room␟user␟socket``); ``occ:alive:{instance}`` a key refreshed by
``maintain`` with the presence TTL; ``occ:instances`` the set of instances. An instance whose
alive key ran out is claimed by the first other instance to ``SREM`` it from ``occ:instances``,
which removes its sockets and announces the departures.

Each instance also keeps its own sockets in process: when ``maintain`` finds its alive key gone
(Redis restarted empty, or this instance stalled past the TTL and was claimed as dead), it writes
them all again, so ``members_online`` and the member lists come back without the sockets having
to reconnect.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from daarion_city.core.redisutil import text, unavailable_when_down
from daarion_city.rooms.occupancy.base import Departure

ADD = """
redis.call('SADD', KEYS[5], ARGV[6])
redis.call('SADD', KEYS[4], ARGV[5])
local added = redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
if added == 1 and redis.call('SCARD', KEYS[2]) == 1 then return 1 end
return 0
"""

REMOVE = """
redis.call('SREM', KEYS[4], ARGV[4])
local removed = redis.call('SREM', KEYS[2], ARGV[2])
if removed == 1 and redis.call('SCARD', KEYS[2]) == 0 then
  local name = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[1]
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[3])
  return name
end
return false
"""

SEP = "\x1f"
log = logging.getLogger(__name__)


class RedisRoomOccupancy:
    def __init__(
        self, client: aioredis.Redis, *, instance_id: str, ttl: float, prefix: str = ""
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self.ttl_ms = int(ttl * 1000)
        self.p = prefix
        self._add = client.register_script(ADD)
        self._remove = client.register_script(REMOVE)
        # This instance's open sockets: conn_id -> (room_id, user_id, name).
        self._local: dict[str, tuple[str, str, str]] = {}

    def _keys(self, room_id: str, user_id: str, instance: str) -> list[str]:
        p = self.p
        return [
            f"{p}occ:members:{room_id}",
            f"{p}occ:socks:{room_id}:{user_id}",
            f"{p}occ:rooms:{user_id}",
            f"{p}occ:inst:{instance}",
        ]

    @unavailable_when_down
    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> bool:
        first = await self._add_entry(room_id, user_id, name, conn_id)
        self._local[conn_id] = (room_id, user_id, name)
        return first

    async def _add_entry(self, room_id: str, user_id: str, name: str, conn_id: str) -> bool:
        keys = [*self._keys(room_id, user_id, self.instance_id), f"{self.p}occ:instances"]
        entry = SEP.join((room_id, user_id, conn_id))
        args = [user_id, name, conn_id, room_id, entry, self.instance_id]
        return bool(await self._add(keys=keys, args=args))

    async def _remove_entry(
        self, instance: str, room_id: str, user_id: str, conn_id: str
    ) -> str | None:
        entry = SEP.join((room_id, user_id, conn_id))
        name = await self._remove(
            keys=self._keys(room_id, user_id, instance), args=[user_id, conn_id, room_id, entry]
        )
        return None if name is None else (text(name))

    @unavailable_when_down
    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        self._local.pop(conn_id, None)  # first: the socket is gone even if Redis is
        return await self._remove_entry(self.instance_id, room_id, user_id, conn_id) is not None

    @unavailable_when_down
    async def members(self, room_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(f"{self.p}occ:members:{room_id}")
        return {text(k): text(v) for k, v in raw.items()}

    @unavailable_when_down
    async def counts(self, room_ids: list[str]) -> dict[str, int]:
        if not room_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for room_id in room_ids:
                pipe.hlen(f"{self.p}occ:members:{room_id}")
            values = await pipe.execute()
        return {rid: int(n) for rid, n in zip(room_ids, values, strict=True)}

    @unavailable_when_down
    async def rooms_of(self, user_id: str) -> list[str]:
        return sorted(text(r) for r in await self.client.smembers(f"{self.p}occ:rooms:{user_id}"))

    @unavailable_when_down
    async def maintain(self, now: float) -> list[Departure]:
        p = self.p
        was_alive = await self.client.set(
            f"{p}occ:alive:{self.instance_id}", b"1", px=self.ttl_ms, get=True
        )
        await self.client.sadd(f"{p}occ:instances", self.instance_id)
        if was_alive is None and self._local:
            await self._restore()
        departures: list[Departure] = []
        for raw in await self.client.smembers(f"{p}occ:instances"):
            instance = text(raw)
            if instance == self.instance_id or await self.client.exists(f"{p}occ:alive:{instance}"):
                continue
            if not await self.client.srem(f"{p}occ:instances", instance):
                continue  # another instance claimed it first
            for entry in await self.client.smembers(f"{p}occ:inst:{instance}"):
                room_id, user_id, conn_id = text(entry).split(SEP)
                name = await self._remove_entry(instance, room_id, user_id, conn_id)
                if name is not None:
                    departures.append(Departure(room_id, user_id, name))
            await self.client.delete(f"{p}occ:inst:{instance}")
        return departures

    async def _restore(self) -> None:
        """Write this instance's sockets again: Redis lost them (it restarted empty) or another
        instance removed them (this one stalled past the TTL). Without this, ``members_online``
        stayed 0 after a Redis restart until every socket reconnected."""
        sockets = list(self._local.items())
        log.info("room occupancy: writing %d sockets of %s again", len(sockets), self.instance_id)
        for conn_id, (room_id, user_id, name) in sockets:
            await self._add_entry(room_id, user_id, name, conn_id)
            if conn_id not in self._local:  # it closed meanwhile: do not leave it behind
                await self._remove_entry(self.instance_id, room_id, user_id, conn_id)

    async def close(self) -> None:
        """A clean stop: this instance's sockets are already gone; forget the instance."""
        p = self.p
        await self.client.srem(f"{p}occ:instances", self.instance_id)
        await self.client.delete(
            f"{p}occ:alive:{self.instance_id}", f"{p}occ:inst:{self.instance_id}"
        )
