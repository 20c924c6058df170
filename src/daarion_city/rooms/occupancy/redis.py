"""Room occupancy in Redis, shared by every instance (see ``base.py`` for the contract).

Keys (after the prefix): ``occ:members:{room}`` hash user -> name; ``occ:recent:{room}`` sorted
set user -> time of their latest socket opening (the roster's order); ``occ:large:{room}``
exists while the room is large; ``occ:socks:{room}:{user}`` set of socket ids;
``occ:rooms:{user}`` set of rooms; ``occ:inst:{instance}`` set of this instance's sockets
(``room␟user␟socket``); ``occ:alive:{instance}`` a key refreshed by ``maintain`` with the
presence TTL; ``occ:instances`` the set of instances. An instance whose alive key ran out is
claimed by the first other instance to ``SREM`` it from ``occ:instances``, which removes its
sockets and announces the departures.

A join storm does not take a connection per socket: the ``add`` and ``remove`` calls made while
a pipeline is in flight go together in the next one (``core/tasks.Batcher``), so 2,000 sockets
opening at once cost a few round trips on one connection, not 2,000 connections from the pool.

Each instance also keeps its own sockets in process (``_local``), and that record wins: when
``maintain`` finds its alive key gone (Redis restarted empty, or this instance stalled past the
TTL and was claimed as dead), it writes them all again; a removal that failed is retried by
``heal`` (about every second, by the room sockets' upkeep) and ``maintain`` removes every entry
of this instance that its record no longer has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from daarion_city.core.redisutil import text, unavailable_when_down
from daarion_city.core.tasks import Batcher, TaskSet
from daarion_city.rooms.occupancy.base import Crowd, Departure, Occupied, Roster
from daarion_city.rooms.occupancy.scripts import ADD, REMOVE, ROSTER

SEP = "\x1f"
BATCH = 500  # script calls per pipeline
log = logging.getLogger(__name__)
Call = tuple[Any, list[str], list[Any]]  # a registered script, its keys and its arguments


class RedisRoomOccupancy:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        instance_id: str,
        ttl: float,
        prefix: str = "",
        large_room: int = 200,
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self.ttl_ms = int(ttl * 1000)
        self.p = prefix
        self.large_room = large_room
        self._add = client.register_script(ADD)
        self._remove = client.register_script(REMOVE)
        self._roster = client.register_script(ROSTER)
        self._tasks = TaskSet("occupancy")
        self._calls: Batcher[Call, Any] = Batcher(
            self._pipeline, self._tasks, name="occupancy-calls", max_batch=BATCH
        )
        # This instance's open sockets: conn_id -> (room_id, user_id, name).
        self._local: dict[str, tuple[str, str, str]] = {}
        # Sockets whose removal failed (or whose add failed after Redis may have run it).
        self._unremoved: dict[str, tuple[str, str]] = {}
        self._clock = 0.0  # the latest activity time written
        self.healed = 0  # entries removed by heal or maintain after a failed call

    @property
    def pending_removals(self) -> int:
        """Sockets whose removal failed and waits for ``heal``."""
        return len(self._unremoved)

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

    def _keys(self, room_id: str, user_id: str, instance: str) -> list[str]:
        p = self.p
        return [
            f"{p}occ:members:{room_id}",
            f"{p}occ:socks:{room_id}:{user_id}",
            f"{p}occ:rooms:{user_id}",
            f"{p}occ:inst:{instance}",
        ]

    def _room_keys(self, room_id: str) -> list[str]:
        return [f"{self.p}occ:recent:{room_id}", f"{self.p}occ:large:{room_id}"]

    @unavailable_when_down
    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> Occupied:
        # Recorded first: ``maintain`` never takes an entry being written for a stray one.
        self._local[conn_id] = (room_id, user_id, name)
        try:
            return await self._add_entry(room_id, user_id, name, conn_id)
        except BaseException:
            self._local.pop(conn_id, None)
            self._unremoved[conn_id] = (room_id, user_id)  # Redis may have run it
            raise

    async def _add_entry(self, room_id: str, user_id: str, name: str, conn_id: str) -> Occupied:
        keys = [
            *self._keys(room_id, user_id, self.instance_id),
            f"{self.p}occ:instances",
            *self._room_keys(room_id),
        ]
        entry = SEP.join((room_id, user_id, conn_id))
        self._clock = max(time.time(), self._clock + 1e-6)  # strictly later: a clear order
        args = [user_id, name, conn_id, room_id, entry, self.instance_id, self._clock]
        first, online, large, crossed = await self._calls.submit(
            (self._add, keys, [*args, self.large_room])
        )
        return Occupied(bool(first), int(online), bool(large), bool(crossed))

    async def _remove_entry(
        self, instance: str, room_id: str, user_id: str, conn_id: str
    ) -> tuple[str | None, Occupied]:
        entry = SEP.join((room_id, user_id, conn_id))
        keys = [*self._keys(room_id, user_id, instance), *self._room_keys(room_id)]
        args = [user_id, conn_id, room_id, entry, self.large_room]
        name, online, large, crossed = await self._calls.submit((self._remove, keys, args))
        left = None if name is None else text(name)
        return left, Occupied(left is not None, int(online), bool(large), bool(crossed))

    @unavailable_when_down
    async def remove(self, room_id: str, user_id: str, conn_id: str) -> Occupied:
        self._local.pop(conn_id, None)  # first: the socket is gone even if Redis is
        try:
            _, occupied = await self._remove_entry(self.instance_id, room_id, user_id, conn_id)
        except BaseException:
            self._unremoved[conn_id] = (room_id, user_id)  # retried by heal
            raise
        self._unremoved.pop(conn_id, None)
        return occupied

    @unavailable_when_down
    async def members(self, room_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(f"{self.p}occ:members:{room_id}")
        return {text(k): text(v) for k, v in raw.items()}

    @unavailable_when_down
    async def roster(self, room_id: str, limit: int) -> Roster:
        p = self.p
        keys = [f"{p}occ:members:{room_id}", f"{p}occ:large:{room_id}", f"{p}occ:recent:{room_id}"]
        online, large, ids, names = await self._roster(keys=keys, args=[limit])
        members = [
            (text(uid), text(uid if name is None else name))
            for uid, name in zip(ids, names, strict=True)
        ]
        return Roster(int(online), bool(large), members)

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
    async def crowds(self, room_ids: list[str]) -> dict[str, Crowd]:
        if not room_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for room_id in room_ids:
                pipe.hlen(f"{self.p}occ:members:{room_id}")
                pipe.exists(f"{self.p}occ:large:{room_id}")
            values = await pipe.execute()
        return {
            rid: Crowd(int(values[2 * i]), bool(values[2 * i + 1]))
            for i, rid in enumerate(room_ids)
        }

    @unavailable_when_down
    async def rooms_of(self, user_id: str) -> list[str]:
        return sorted(text(r) for r in await self.client.smembers(f"{self.p}occ:rooms:{user_id}"))

    async def heal(self) -> list[Departure]:
        """Retry the removals that failed; the users they leave behind, as departures."""
        if not self._unremoved:
            return []
        pending = list(self._unremoved.items())
        results = await asyncio.gather(
            *(self._remove_entry(self.instance_id, r, u, c) for c, (r, u) in pending),
            return_exceptions=True,
        )
        departures: list[Departure] = []
        done = 0
        for (conn_id, (room_id, user_id)), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                continue  # still failing: the next round
            self._unremoved.pop(conn_id, None)
            done += 1
            name, occupied = result
            if name is not None:
                departures.append(Departure(room_id, user_id, name, occupied))
        if done:
            self.healed += done
            log.info("room occupancy: %d failed removals made good", done)
        return departures

    @unavailable_when_down
    async def maintain(self, now: float) -> list[Departure]:
        p = self.p
        was_alive = await self.client.set(
            f"{p}occ:alive:{self.instance_id}", b"1", px=self.ttl_ms, get=True
        )
        await self.client.sadd(f"{p}occ:instances", self.instance_id)
        if was_alive is None and self._local:
            await self._restore()
        departures = await self.heal()
        departures += await self._reconcile()
        for raw in await self.client.smembers(f"{p}occ:instances"):
            instance = text(raw)
            if instance == self.instance_id or await self.client.exists(f"{p}occ:alive:{instance}"):
                continue
            if not await self.client.srem(f"{p}occ:instances", instance):
                continue  # another instance claimed it first
            entries = [
                text(e).split(SEP) for e in await self.client.smembers(f"{p}occ:inst:{instance}")
            ]
            departures += await self._remove_all(instance, entries)
            await self.client.delete(f"{p}occ:inst:{instance}")
        return departures

    async def _reconcile(self) -> list[Departure]:
        """Remove this instance's entries that its record no longer has (a removal that failed
        without being noticed, an add that failed after Redis ran it)."""
        raw = await self.client.smembers(f"{self.p}occ:inst:{self.instance_id}")
        local, unremoved = self._local, self._unremoved
        # Only the stray entries are split: a list per entry of 10,000 sockets, all alive at
        # once, cost more in the collector's passes they set off than the split itself.
        stray = []
        for e in raw:
            entry = text(e)
            conn_id = entry[entry.rfind(SEP) + 1 :]
            if conn_id not in local and conn_id not in unremoved:
                stray.append(entry.split(SEP))
        if not stray:
            return []
        log.info("room occupancy: removing %d stray sockets of %s", len(stray), self.instance_id)
        self.healed += len(stray)
        return await self._remove_all(self.instance_id, stray)

    async def _remove_all(self, instance: str, entries: list[list[str]]) -> list[Departure]:
        results = await asyncio.gather(
            *(self._remove_entry(instance, room, user, conn) for room, user, conn in entries)
        )
        return [
            Departure(room, user, name, occupied)
            for (room, user, _), (name, occupied) in zip(entries, results, strict=True)
            if name is not None
        ]

    async def _restore(self) -> None:
        """Write this instance's sockets again: Redis lost them (it restarted empty) or another
        instance removed them (this one stalled past the TTL). Without this, ``members_online``
        stayed 0 after a Redis restart until every socket reconnected."""
        sockets = list(self._local.items())
        log.info("room occupancy: writing %d sockets of %s again", len(sockets), self.instance_id)
        await asyncio.gather(
            *(self._add_entry(room, user, name, conn) for conn, (room, user, name) in sockets)
        )
        closed = [
            [room, user, conn] for conn, (room, user, _) in sockets if conn not in self._local
        ]
        await self._remove_all(self.instance_id, closed)  # closed meanwhile: not left behind

    async def close(self) -> None:
        """A clean stop: this instance's sockets are already gone; forget the instance."""
        await self._tasks.close()
        p = self.p
        await self.client.srem(f"{p}occ:instances", self.instance_id)
        await self.client.delete(
            f"{p}occ:alive:{self.instance_id}", f"{p}occ:inst:{self.instance_id}"
        )
