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
    ends. A thousand sockets opening into one room cost a few dozen reads, not a thousand."""

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._running: set[K] = set()
        self._next: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        future = self._next.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._next[key] = future
            if key not in self._running:
                self._start(key)
        return await asyncio.shield(future)

    def _start(self, key: K) -> None:
        future = self._next.pop(key)
        self._running.add(key)
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
                self._start(key)

        task.add_done_callback(done)
