"""The unread counts pushed while new messages arrive (SPEC section 9: ``unread.update``).

Every instance learns of every new message and deletion from the feed's bus events, and pushes
the counts to its own presence sockets, for the users who list the room (its members, and
everyone for a default room). Per room, the first change is pushed at once; then at most one
push per ``CITY_UNREAD_PUSH_INTERVAL`` while changes keep coming, and a last one after the
burst, so the final counts always arrive. One push is one statement for all the room's readers
on this instance (``storage/unread.counts``), whatever the number of messages in the burst.
A user who joins a room gets its counts at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from daarion_city.core.metrics import Metrics
from daarion_city.core.tasks import TaskSet
from daarion_city.feed.service import RecordedEvent
from daarion_city.rooms.unread import update_frame
from daarion_city.storage import unread as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

# Feed events that change the unread counts of the room's readers.
COUNTED = frozenset({"room_message", "message_deleted"})


class UnreadPush:
    def __init__(
        self,
        *,
        db: Database,
        interval: float,
        local_users: Callable[[], Collection[str]],
        deliver: Callable[[str, str], None],
        metrics: Metrics,
        tasks: TaskSet,
    ) -> None:
        self.db = db
        self.interval = interval
        self._local_users = local_users
        self._deliver = deliver
        self._metrics = metrics
        self._tasks = tasks
        self._active: set[str] = set()  # rooms with a push running or cooling down
        self._dirty: set[str] = set()  # of those, rooms changed since their last push

    def on_feed(self, events: list[RecordedEvent]) -> None:
        """The feed's listener (every instance, this one's included)."""
        for event in events:
            kind, room_id = event.wire["kind"], event.wire["room_id"]
            if kind in COUNTED and room_id is not None:
                self.changed(room_id)
            elif kind == "member_joined" and event.wire["user_id"] in self._local_users():
                self._tasks.spawn(self._push(room_id, [event.wire["user_id"]]))

    def changed(self, room_id: str) -> None:
        if room_id in self._active:
            self._dirty.add(room_id)
            return
        self._active.add(room_id)
        self._tasks.spawn(self._run(room_id), name=f"unread-{room_id}")

    async def _run(self, room_id: str) -> None:
        try:
            while True:
                self._dirty.discard(room_id)
                await self._push(room_id, None)
                await asyncio.sleep(self.interval)
                if room_id not in self._dirty:
                    return
        finally:
            self._active.discard(room_id)
            self._dirty.discard(room_id)

    async def _push(self, room_id: str, users: list[str] | None) -> None:
        """The counts of the room's readers here (or of ``users``), to their presence sockets."""
        readers = list(self._local_users()) if users is None else users
        if not readers:
            return
        try:
            async with self.db.read() as conn:
                counts = await store.counts(conn, readers, room_id)
        except Exception:
            log.warning("unread counts of %s not pushed", room_id, exc_info=True)
            return
        for c in counts:
            self._deliver(c[0], update_frame(c))
        self._metrics.unread_pushes.inc(len(counts))
