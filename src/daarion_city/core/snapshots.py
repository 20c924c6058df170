"""Encoded answers kept in memory until what they show changes: the pattern of every read that
many clients ask for and that changes rarely (the room list, the room details and their newest
pages, the feed; the authenticated reads of v2 group theirs per user).

A snapshot is an answer's bytes, encoded once, with its ``ETag`` computed once
(:class:`~daarion_city.core.answers.Encoded`). Reads are served from it until its owner
invalidates it: right after the commit of a change on this instance (before the writer gets its
answer: read-your-writes), and when a bus event tells of a change on another one (the same
moment the sockets of this instance hear of it). The next read after an invalidation loads the
answer again, once for every reader that asks while the load runs.

What keeps a snapshot from going stale:

- a load that started before an invalidation of its group never becomes the snapshot (its
  readers, who asked before the change was acknowledged, get what it read, and later readers a
  new load);
- each snapshot lives at most ``max_age`` seconds (``CITY_READ_SNAPSHOT_MAX_AGE``), a bound
  on what a lost bus message can leave stale, as the sockets' reconcile bounds their gaps;
- at most ``capacity`` snapshots are kept (``CITY_READ_SNAPSHOTS``), the least recently read
  dropped first; 0 turns the snapshots off (every read loads, as the benchmarks' baseline).

Snapshots are grouped (a room's detail and pages, a user's reads) so that one change drops what
it touches and nothing else; a change of unknown reach drops everything.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from daarion_city.core.answers import Encoded
from daarion_city.core.metrics import Metrics

Load = Callable[[], Awaitable[Any]]
Slot = tuple[str, Hashable]  # (group, key)


@dataclass(slots=True)
class _Snapshot:
    encoded: Encoded
    born: float  # when its load started


class _Flight:
    __slots__ = ("stale", "started", "task")

    def __init__(self, task: asyncio.Future[Encoded], started: float) -> None:
        self.task = task
        self.started = started
        self.stale = False


class Snapshots:
    def __init__(
        self,
        name: str,
        *,
        capacity: int,
        max_age: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.max_age = max_age
        self._clock = clock
        self._snapshots: OrderedDict[Slot, _Snapshot] = OrderedDict()
        self._keys: dict[str, set[Hashable]] = {}  # group -> keys with a snapshot
        self._flights: dict[Slot, _Flight] = {}  # the current load of each slot
        self.hits = 0
        self.loads = 0
        self._count = metrics.read_snapshots.labels(name, "hit") if metrics else None
        self._count_load = metrics.read_snapshots.labels(name, "load") if metrics else None

    def __len__(self) -> int:
        return len(self._snapshots)

    async def get(self, group: str, key: Hashable, load: Load) -> Encoded:
        """The snapshot of ``(group, key)``, loaded by ``load`` (which returns the answer's
        content) when there is none, or none loaded since the group last changed."""
        slot = (group, key)
        snapshot = self._snapshots.get(slot)
        now = self._clock()
        if snapshot is not None:
            if now - snapshot.born < self.max_age:
                self._snapshots.move_to_end(slot)
                self.hits += 1
                if self._count is not None:
                    self._count.inc()
                return snapshot.encoded
            self._drop(slot)
        flight = self._flights.get(slot)
        if flight is None:
            flight = self._start(slot, load, now)
        return await asyncio.shield(flight.task)

    def invalidate(self, group: str) -> None:
        """What ``group`` shows changed: its snapshots are dropped, its running loads kept from
        becoming snapshots."""
        for key in self._keys.pop(group, ()):
            del self._snapshots[(group, key)]
        for slot in [s for s in self._flights if s[0] == group]:
            self._flights.pop(slot).stale = True

    def invalidate_all(self) -> None:
        self._snapshots.clear()
        self._keys.clear()
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()

    def _start(self, slot: Slot, load: Load, now: float) -> _Flight:
        self.loads += 1
        if self._count_load is not None:
            self._count_load.inc()
        flight = _Flight(asyncio.ensure_future(_encoded(load)), now)
        if self.capacity <= 0:
            return flight  # nothing kept, nothing shared: every read loads
        self._flights[slot] = flight

        def done(task: asyncio.Future[Encoded]) -> None:
            if self._flights.get(slot) is flight:
                del self._flights[slot]
            if flight.stale or task.cancelled() or task.exception() is not None:
                return
            self._keep(slot, _Snapshot(task.result(), flight.started))

        flight.task.add_done_callback(done)
        return flight

    def _keep(self, slot: Slot, snapshot: _Snapshot) -> None:
        self._snapshots[slot] = snapshot
        self._snapshots.move_to_end(slot)
        self._keys.setdefault(slot[0], set()).add(slot[1])
        while len(self._snapshots) > self.capacity:
            self._drop(next(iter(self._snapshots)))

    def _drop(self, slot: Slot) -> None:
        del self._snapshots[slot]
        keys = self._keys.get(slot[0])
        if keys is not None:
            keys.discard(slot[1])
            if not keys:
                del self._keys[slot[0]]


async def _encoded(load: Load) -> Encoded:
    return Encoded.of(await load())
