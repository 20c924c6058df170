"""Owned background tasks: every task started outside a request has an owner that stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")


class TaskSet:
    """Spawn background work that is still stopped, and its failures logged, on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None

    @property
    def stopping(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name or self.name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def every(
        self, interval: float, work: Callable[[], Awaitable[None]], name: str
    ) -> asyncio.Task[Any]:
        """Run ``work`` every ``interval`` seconds until close; a failure is logged and retried."""

        async def loop() -> None:
            stopping = self.stopping
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)
                    return
                try:
                    await work()
                except Exception:
                    log.warning("%s failed; retrying in %ss", name, interval, exc_info=True)

        return self.spawn(loop(), name=name)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s task %s failed", self.name, task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, grace: float = 5.0) -> None:
        self.stopping.set()
        for _ in range(3):
            tasks = list(self._tasks)
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            # A client library may swallow one cancellation; ask again, boundedly.
            await asyncio.wait(tasks, timeout=grace / 3)
        if self._tasks:
            log.warning("%s: %d tasks did not stop", self.name, len(self._tasks))


class FreshFlight(Generic[K, V]):
    """Share a read among concurrent callers, each getting a result read after it asked.

    Plain single-flight would hand a caller a read that started before its own write (a socket
    opening must see itself in the room's member list). Here a caller waits for the next read
    to start: while one read runs, every caller that arrives shares the one that starts when it
    ends. A thousand sockets opening into one room cost a few dozen reads, not a thousand.

    With ``spacing``, reads of one key start at least that many seconds apart: under a steady
    stream of callers (a join storm) reads would otherwise run back to back, one per round
    trip; spaced, each serves everyone who asked during the spacing too (a caller waits at
    most ``spacing`` longer, and still gets a read that started after it asked)."""

    def __init__(self, read: Callable[[K], Awaitable[V]], *, spacing: float = 0.0) -> None:
        self._read = read
        self._spacing = spacing
        self._running: set[K] = set()  # keys with a read running or about to start
        self._next: dict[K, asyncio.Future[V]] = {}
        # When the latest read of each key started (kept while idle: one float per key, the
        # rooms' ids here).
        self._started: dict[K, float] = {}

    async def get(self, key: K) -> V:
        future = self._next.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._next[key] = future
            if key not in self._running:
                self._launch(key)
        return await asyncio.shield(future)

    def _launch(self, key: K) -> None:
        self._running.add(key)
        loop = asyncio.get_running_loop()
        wait = self._started.get(key, -self._spacing) + self._spacing - loop.time()
        if wait > 0:
            loop.call_later(wait, self._start, key)
        else:
            self._start(key)

    def _start(self, key: K) -> None:
        future = self._next.pop(key)
        self._started[key] = asyncio.get_running_loop().time()
        task = asyncio.ensure_future(self._read(key))

        def done(t: asyncio.Future[V]) -> None:
            self._running.discard(key)
            if not future.done():
                if t.cancelled():
                    future.cancel()
                elif (exc := t.exception()) is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(t.result())
            if key in self._next:
                self._launch(key)

        task.add_done_callback(done)


class Batcher(Generic[T, R]):
    """Calls made while a batch is in flight go together in the next one (group commit).

    ``submit`` queues an item and waits for its own result; one owned task runs ``run`` on
    everything queued (at most ``max_batch`` items per run) until nothing is. ``run`` answers
    each item in order with a result or an exception; an exception ``run`` raises is every
    item's answer. Nothing waits for a batch to fill: an item alone runs at once. Used for
    the rate limit's script calls, the bus's publish pipelines and the rooms' commits."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        tasks: TaskSet,
        *,
        name: str,
        max_batch: int | None = None,
    ) -> None:
        self._run = run
        self._tasks = tasks
        self._name = name
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``: the future of its result (``submit`` without a coroutine, for a
        caller that only needs the answer later)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._running:
            self._running = True
            self._tasks.spawn(self._drain(), name=self._name)
        return future

    async def _drain(self) -> None:
        taken: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                size = len(self._queue) if self._max is None else self._max
                taken, self._queue = self._queue[:size], self._queue[size:]
                try:
                    results = await self._run([item for item, _ in taken])
                except Exception as exc:
                    results = [exc] * len(taken)
                for (_, future), result in zip(taken, results, strict=True):
                    if future.done():
                        continue  # its caller went away
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except BaseException:  # stopped: nobody waits for ever
            for _, future in [*taken, *self._queue]:
                future.cancel()
            self._queue = []
            raise
        finally:
            self._running = False
