"""The users the city knows: those it has seen authenticated (SPEC 12: only they are notified).

A token verified for the first time on an instance notes its user (``TokenAuthority``'s
``on_new``); the users noted are written in the background, many in one statement, once per
user per instance (a bounded memory of who was written already)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.clock import utcnow
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.storage import unread as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)


class KnownUsers:
    def __init__(self, db: Database, *, capacity: int = 100_000) -> None:
        self.db = db
        self.capacity = capacity
        self._noted: set[str] = set()
        self._pending: dict[str, str] = {}
        self._writer: asyncio.Task[None] | None = None
        self._tasks = TaskSet("known-users")

    def note(self, user: Principal) -> None:
        if user.user_id in self._noted:
            return
        if len(self._noted) >= self.capacity:
            self._noted.clear()  # bounded: a user noted again is written again (a no-op)
        self._noted.add(user.user_id)
        self._pending[user.user_id] = user.name
        if self._writer is None:
            self._writer = self._tasks.spawn(self._write(), name="known-users")

    async def _write(self) -> None:
        try:
            while self._pending:
                users, self._pending = self._pending, {}
                try:
                    async with self._connection() as conn:
                        await store.add_known(conn, list(users.items()), utcnow())
                except Exception:
                    log.warning("%d known users not recorded", len(users), exc_info=True)
                    self._noted.difference_update(users)  # noted again at their next request
        finally:
            self._writer = None

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """On PostgreSQL the batch is one statement, atomic by itself: no BEGIN and COMMIT
        around it (a join storm's batches are a few users each, and those two round trips
        cost more than the insert)."""
        return self.db.begin() if self.db.is_sqlite else self.db.autocommit()

    async def settled(self) -> None:
        """Wait until the users noted so far on this instance are written (before a lookup of
        who is known, so a user seen a moment ago counts)."""
        if (writer := self._writer) is not None:
            await asyncio.shield(writer)

    async def close(self) -> None:
        await self._tasks.close()
