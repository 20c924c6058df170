"""Full garbage collections on the service's own schedule, not whenever the heap has grown.

Python runs a full collection of the cyclic garbage collector (generation 2) whenever the
objects that survived the younger collections since the last one reach a quarter of those it
holds for long. A full collection walks every tracked object and holds the event loop
meanwhile. With 10,000 sockets open that is hundreds of thousands of objects: during a join
storm of 10,000 (a quarter more every few seconds) it ran 13 times, paused the loop 30 to
528 ms each (``GET /healthz`` saw them as its maximum) and took about a seventh of the
server's CPU; the one after the storm, which found the closed sockets' garbage, took 0.8 s
(bench/RESULTS.md, issue 26).

Here the younger generations are collected as Python always does (cheap, and most cyclic
garbage dies there), while generation 2 is only collected by a task on the server's event loop
every ``CITY_GC_INTERVAL`` seconds, and never more often than keeps full collections under 1% of
the time (a collection that took 0.8 s waits 80 s for the next). On the loop's thread, as
Python's own collections mostly ran: the finalizers of asyncio's objects run where they may
touch the loop. Cyclic garbage that reached the old generation waits for that collection:
memory, never correctness. The objects built before the server starts are frozen out of every
collection's sight (``cli.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

NEVER = 1 << 30  # a generation-2 threshold the collections of generation 1 never reach
BUDGET = 0.01  # share of the time full collections may take


class FullCollections:
    """Python's own full collections off (:meth:`take_over`), and :meth:`run`, the loop's task
    that runs them every ``interval`` seconds (or less often, within ``budget``)."""

    def __init__(self, interval: float, *, budget: float = BUDGET) -> None:
        self.interval = interval
        self.budget = budget
        self.collections = 0
        self.last_pause = 0.0  # seconds the last full collection took
        self._thresholds: tuple[int, int, int] | None = None

    def take_over(self) -> None:
        young, middle, old = gc.get_threshold()
        if self._thresholds is None:
            self._thresholds = (young, middle, old)
        gc.set_threshold(young, middle, NEVER)

    def give_back(self) -> None:
        """Python's own schedule again."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def next_wait(self) -> float:
        """Seconds until the next full collection."""
        return max(self.interval, self.last_pause / self.budget)

    def collect(self) -> None:
        began = time.perf_counter()
        found = gc.collect(2)
        self.last_pause = time.perf_counter() - began
        self.collections += 1
        log.debug("full collection: %d objects in %.0f ms", found, self.last_pause * 1000)

    async def run(self) -> None:
        """Until cancelled: a full collection every :meth:`next_wait` seconds, on the loop."""
        while True:
            await asyncio.sleep(self.next_wait())
            self.collect()
