"""Feed policy: recording events inside other services' transactions, listing, and live streams.

Live delivery: after a commit the writer publishes each event on the bus channel ``city:feed``;
every instance fans it out to its local stream subscribers and its listeners (the rooms' reads
learn of other instances' changes from it). The pages of ``GET /city/feed`` are answered from
snapshots (``core/snapshots.py``) that ``changed`` drops, called by the writer after its commit
and by every event from the bus. A subscriber has a bounded queue
(``max_queue`` events); one that falls behind is ended, and its client resumes with
``Last-Event-ID``, which replays from the database what it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.core.answers import Encoded
from daarion_city.core.clock import utcnow
from daarion_city.core.errors import NotFound
from daarion_city.core.ids import new_id
from daarion_city.core.provided import Key
from daarion_city.core.snapshots import Snapshots
from daarion_city.feed.schemas import event_wire, message_payload
from daarion_city.pubsub import PubSub
from daarion_city.storage import feed as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

CHANNEL = "city:feed"
REPLAY_LIMIT = 1000
Listener = Callable[[list["RecordedEvent"]], None]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    pos: int
    wire: dict[str, Any]


class _Subscriber:
    def __init__(self, max_queue: int) -> None:
        self.queue: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(max_queue)

    def offer(self, event: RecordedEvent) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True


class FeedService:
    def __init__(
        self,
        db: Database,
        bus: PubSub,
        *,
        max_queue: int = 1000,
        pages: Snapshots | None = None,
        outbox: bool = False,
    ) -> None:
        self.db = db
        # Webhooks on: every event written gets its outbox row in its transaction (webhooks.py).
        self.outbox = outbox
        self.bus = bus
        self.max_queue = max_queue
        self._subscribers: set[_Subscriber] = set()
        self._listeners: list[Listener] = []
        self._pages = pages if pages is not None else Snapshots("feed", capacity=0, max_age=1)

    def add_listener(self, listener: Listener) -> None:
        """Called with the events of each bus item, on every instance (this one's included)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        self.bus.add_reconnect_listener(self._after_outage)
        self.bus.joinable(CHANNEL)  # a bus item is lines of events: items concatenate
        await self.bus.subscribe(CHANNEL, self._on_bus)

    async def _after_outage(self) -> None:
        self._pages.invalidate_all()

    async def stop(self) -> None:
        await self.bus.unsubscribe(CHANNEL, self._on_bus)
        for sub in list(self._subscribers):
            self._end(sub)

    # --- writing ------------------------------------------------------------------------------
    async def record(
        self,
        conn: AsyncConnection,
        kind: str,
        *,
        room_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        payload: dict[str, Any],
    ) -> RecordedEvent:
        """Write one event in the caller's transaction; publish it after the commit."""
        event = {"room_id": room_id, "user_id": user_id, "agent_id": agent_id, "payload": payload}
        (recorded,) = await self.record_many(conn, kind, [event])
        return recorded

    async def record_many(
        self, conn: AsyncConnection, kind: str, events: list[dict[str, Any]]
    ) -> list[RecordedEvent]:
        """Write events of one kind (each ``{room_id, user_id, agent_id, payload}``) in the
        caller's transaction, in one statement."""
        return await self.write(conn, self.rows(kind, events))

    async def write(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[RecordedEvent]:
        """Write rows made by :meth:`rows` in the caller's transaction, in one statement."""
        return self.recorded(rows, await store.insert_events(conn, rows, outbox=self.outbox))

    @staticmethod
    def rows(kind: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of new events of one kind, for a caller that writes them itself (the
        rooms' group commit, storage/messages.py)."""
        now = utcnow()
        return [
            {"id": new_id("evt"), "kind": kind, "created_at": now, "agent_id": None, **e}
            for e in events
        ]

    @staticmethod
    def recorded(rows: list[dict[str, Any]], positions: list[int]) -> list[RecordedEvent]:
        """Written rows, with their positions in the same order, as events to publish."""
        return [
            RecordedEvent(pos, event_wire(SimpleNamespace(**row)))
            for pos, row in zip(positions, rows, strict=True)
        ]

    # A room_message event's payload as shown (its id, the snippet while the message is there):
    # the rooms build their published events with it.
    message_payload = staticmethod(message_payload)

    @staticmethod
    def item(events: list[RecordedEvent]) -> tuple[str, bytes]:
        """Committed events as one bus item (for a caller that publishes several things at
        once): for each, a line with its position and a line with its JSON."""
        return CHANNEL, b"".join(b"%d\n%b\n" % (e.pos, orjson.dumps(e.wire)) for e in events)

    def changed(self) -> None:
        """Events were committed: the pages kept in memory are dropped."""
        self._pages.invalidate_all()

    async def publish(self, event: RecordedEvent) -> None:
        """Announce an event committed by the caller (whose pages are dropped first, so the
        writer reads its own write)."""
        self.changed()
        try:
            await self.bus.publish(*self.item([event]))
        except Exception:
            # Committed already; streams resume from the database with Last-Event-ID.
            log.warning("could not publish feed event %s", event.wire["id"], exc_info=True)

    # --- reading ------------------------------------------------------------------------------
    async def page(
        self, *, limit: int, before: str | None = None, kind: str | None = None
    ) -> Encoded:
        """A page of ``GET /city/feed``, encoded, from its snapshot."""
        return await self._pages.get(
            "", (limit, before, kind), lambda: self.list(limit=limit, before=before, kind=kind)
        )

    async def list(
        self, *, limit: int, before: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            before_pos = None
            if before is not None:
                before_pos = await store.position_of(conn, before)
                if before_pos is None:
                    raise NotFound(f"no feed event {before!r}", code="event_not_found")
            rows = await store.list_events(conn, limit=limit, before_pos=before_pos, kind=kind)
        return [event_wire(row) for row in rows]

    async def stream(
        self, last_event_id: str | None, *, keepalive: float = 15.0
    ) -> AsyncIterator[RecordedEvent | None]:
        """Events after ``last_event_id`` (from the database), then live ones, each once;
        ``None`` after ``keepalive`` seconds without an event."""
        sub = _Subscriber(self.max_queue)
        self._subscribers.add(sub)
        try:
            replayed: set[str] = set()
            if last_event_id:
                async with self.db.read() as conn:
                    after = await store.position_of(conn, last_event_id)
                    rows = (
                        await store.list_events(
                            conn, limit=REPLAY_LIMIT, after_pos=after, ascending=True
                        )
                        if after is not None
                        else []
                    )
                for row in rows:
                    replayed.add(row.id)
                    yield RecordedEvent(int(row.pos), event_wire(row))
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), keepalive)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    return
                if event.wire["id"] in replayed:
                    continue
                yield event
        finally:
            self._subscribers.discard(sub)

    def _on_bus(self, data: bytes) -> None:
        self.changed()
        if not self._subscribers and not self._listeners:
            return  # nobody here to read the events: nothing to parse
        lines = data.split(b"\n")
        events = [
            RecordedEvent(int(lines[i]), orjson.loads(lines[i + 1]))
            for i in range(0, len(lines) - 1, 2)
        ]
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                log.warning("feed listener failed", exc_info=True)
        for event in events:
            for sub in list(self._subscribers):
                if not sub.offer(event):
                    log.info("feed stream subscriber fell behind; ending its stream")
                    self._end(sub)

    def _end(self, sub: _Subscriber) -> None:
        self._subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def end_streams(self) -> None:
        """Server shutdown: every stream ends (clients reconnect with Last-Event-ID)."""
        for sub in list(self._subscribers):
            self._end(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


FEED: Key[FeedService] = Key("feed")
