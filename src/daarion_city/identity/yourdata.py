"""A user's own data (SPEC sections 11 and 12, GDPR articles 15, 17 and 20): ``GET /city/me/export``
gathers everything the city keeps about the caller; ``DELETE /city/me`` erases it.

Each domain that keeps something of a user registers an exporter and an eraser here
(``app/wiring.py``: the rooms' ``rooms/erasure.RoomsData``, Second Me's
``secondme/yourdata.SecondMeData``, presence's record). An erasure first retires the user id
(``identity/retirements.py``: every token refused, every socket closed with 4401, on every
instance), then runs the erasers in order, then marks the erasure finished. The answer (202)
waits for the erasers up to ``WAIT`` seconds, so in the common case everything is gone when it
comes; a longer erasure goes on in the background. One cut short (a crash) is finished at the
next start (``resume``); the erasers are written to run again safely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.provided import Key
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.identity.retirements import Retirements
from daarion_city.ratelimit import RateLimiter
from daarion_city.storage import yourdata as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

Exporter = Callable[[str], Awaitable[dict[str, Any]]]  # parts of the export, by name
Eraser = Callable[[str], Awaitable[None]]
WAIT = 10.0  # seconds DELETE /city/me waits for the erasers before it answers
RESUME_EVERY = 60.0  # seconds between looks for erasures cut short


class YourData:
    def __init__(
        self, db: Database, retirements: Retirements, limiter: RateLimiter, per_minute: float
    ) -> None:
        self.db = db
        self.retirements = retirements
        self.limiter = limiter
        self.per_minute = per_minute
        self.exporters: list[Exporter] = []
        self.erasers: list[Eraser] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet("yourdata")

    def start(self) -> None:
        self._tasks.spawn(self.resume(), name="yourdata-resume")
        self._tasks.every(RESUME_EVERY, self.resume, name="yourdata-resume")

    async def resume(self) -> None:
        """Finish the erasures a stop or a failure cut short (in the background)."""
        async with self.db.read() as conn:
            for user_id in await store.unfinished(conn):
                self._start(user_id)

    async def close(self) -> None:
        await self._tasks.close()

    async def _limit(self, user: Principal) -> None:
        await self.limiter.hit(f"yourdata:{user.user_id}", rate=self.per_minute / 60, burst=3)

    async def export(self, user: Principal) -> dict[str, Any]:
        await self._limit(user)
        data: dict[str, Any] = {
            "user_id": user.user_id,
            "name": user.name,
            "admin": user.admin,
            "exported_at": iso(utcnow()),
        }
        for exporter in self.exporters:
            data.update(await exporter(user.user_id))
        return data

    async def erase(self, user: Principal) -> bool:
        """Retire the user id, then erase, waiting up to ``WAIT`` seconds: whether it is done."""
        await self._limit(user)
        await self.retirements.retire(user.user_id)
        task = self._start(user.user_id)
        try:
            await asyncio.wait_for(asyncio.shield(task), WAIT)
        except TimeoutError:
            return False
        except Exception:  # logged by the task set; tried again by ``resume``
            return False
        return True

    def _start(self, user_id: str) -> asyncio.Task[None]:
        task = self._running.get(user_id)
        if task is None:
            task = self._tasks.spawn(self._erase(user_id), name=f"erase-{user_id}")
            self._running[user_id] = task
            task.add_done_callback(lambda _: self._running.pop(user_id, None))
        return task

    async def _erase(self, user_id: str) -> None:
        for eraser in self.erasers:
            await eraser(user_id)
        async with self.db.begin() as conn:
            await store.mark_erased(conn, user_id, utcnow())
        log.info("erased the data of %s", user_id)


YOURDATA: Key[YourData] = Key("yourdata")
