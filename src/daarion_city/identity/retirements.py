"""Retired user ids (SPEC sections 11 and 12): once a user is erased (``DELETE /city/me``), every
token with their ``sub`` is refused (401), on every instance and after any restart.

Every instance keeps the retired ids in memory, so the check the token authority makes on each
request is one set lookup (a retired id is a row of ``city_retired_users``, written before the
erasure starts). A retirement is told on the bus channel ``city:retired``, which closes the
user's sockets on every instance; every instance also reads the rows added since its last read
every ``refresh`` seconds, which brings in what a lost bus message missed.
"""

from __future__ import annotations

import logging

from daarion_city.core.clock import utcnow
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.suspensions import Expel
from daarion_city.pubsub import PubSub
from daarion_city.storage import yourdata as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

NOTICES = "city:retired"


class Retirements:
    def __init__(self, db: Database, bus: PubSub, *, refresh: float = 5.0) -> None:
        self.db = db
        self.bus = bus
        self.refresh = refresh
        self._retired: set[str] = set()
        self._pos = 0
        self.expellers: list[Expel] = []
        self._tasks = TaskSet("retirements")

    async def start(self) -> None:
        await self.load()
        await self.bus.subscribe(NOTICES, self._on_notice)
        self._tasks.every(self.refresh, self.load, name="retirements")

    async def stop(self) -> None:
        await self.bus.unsubscribe(NOTICES, self._on_notice)
        await self._tasks.close()

    async def load(self) -> None:
        async with self.db.read() as conn:
            rows = await store.retired_after(conn, self._pos)
        for row in rows:
            self._pos = max(self._pos, int(row.pos))
            self._add(str(row.user_id))

    def is_retired(self, user_id: str) -> bool:
        return user_id in self._retired

    async def retire(self, user_id: str) -> None:
        """Retire the id: stored first (so a crash after it still refuses the tokens), then
        known here at once and told to the other instances."""
        async with self.db.begin() as conn:
            await store.retire(conn, user_id, utcnow())
        self._add(user_id)
        try:
            await self.bus.publish(NOTICES, user_id.encode())
        except Exception:
            log.warning("retirement notice not published (read again within %ss)", self.refresh)

    def _on_notice(self, data: bytes) -> None:
        self._add(data.decode())

    def _add(self, user_id: str) -> None:
        if user_id in self._retired:
            return
        self._retired.add(user_id)
        for expel in self.expellers:
            try:
                expel(user_id, "erased")
            except Exception:
                log.warning("sockets of erased %s not closed", user_id, exc_info=True)
