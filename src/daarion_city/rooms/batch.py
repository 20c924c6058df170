"""One batch of posts to a room, stored: its message rows and feed events, the retries among
them sorted out, and the statement it shares with the batches of other rooms ready at the same
time. The group commit (``rooms/commit.py``) queues the posts, answers and announces them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError

from daarion_city.core.clock import utcnow
from daarion_city.core.errors import NotFound, Unprocessable
from daarion_city.core.ids import new_id
from daarion_city.core.metrics import Metrics
from daarion_city.core.tasks import Batcher, TaskSet
from daarion_city.feed.service import FeedService, RecordedEvent
from daarion_city.identity.principal import Principal
from daarion_city.rooms.frames import message_frame
from daarion_city.rooms.schemas import message_wire
from daarion_city.storage import messages as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

_Key = tuple[str, str]  # (author_user_id, client_msg_id)


@dataclass(slots=True)
class Pending:
    user: Principal
    body: str
    client_msg_id: str | None
    reply_to_seq: int | None
    mentions: list[str]
    future: asyncio.Future[PostResult]
    allowed: asyncio.Future[None]  # the rate limit's verdict: done, or RateLimited


@dataclass(frozen=True, slots=True)
class PostResult:
    message: dict[str, Any]
    created: bool


def answer(batch: list[Pending], results: list[PostResult]) -> None:
    for item, result in zip(batch, results, strict=True):
        if not item.future.done():
            item.future.set_result(result)


class Limited(Protocol):
    """A queued post or change: its answer, and the rate limit's verdict (None: not limited)."""

    @property
    def future(self) -> asyncio.Future[Any]: ...

    @property
    def allowed(self) -> asyncio.Future[None] | None: ...


_Item = TypeVar("_Item", bound=Limited)


async def allowed_posts(batch: list[_Item]) -> list[_Item]:
    """The items of ``batch`` the rate limit allowed; the others are answered its error."""
    verdicts = [item.allowed for item in batch]
    waiting = [v for v in verdicts if v is not None and not v.done()]
    if waiting:
        await asyncio.wait(waiting)
    kept = []
    for item, verdict in zip(batch, verdicts, strict=True):
        if verdict is not None and verdict.cancelled():  # the server is stopping
            item.future.cancel()
        elif verdict is None or (exc := verdict.exception()) is None:
            kept.append(item)
        elif not item.future.done():
            item.future.set_exception(exc)
    return kept


class _SplitUp(Exception):
    """A statement of several rooms' batches failed: each room commits on its own."""


@dataclass(slots=True)
class Committed:
    """A committed batch: the answers, and what is announced once they are sent."""

    results: list[PostResult]
    frames: list[tuple[int, str]]  # (seq, frame) of the messages it created
    events: list[RecordedEvent]
    users: list[Principal]


class BatchWriter:
    """Commits batches of posts (``commit``), the rooms' batches ready together in one go."""

    def __init__(self, db: Database, feed: FeedService, metrics: Metrics, tasks: TaskSet) -> None:
        self.db = db
        self.feed = feed
        self.metrics = metrics
        self._commit_batches = store.batch_commit(db, outbox=feed.outbox)
        # Group commit across rooms: each room's commit loop makes one batch at a
        # time, and the batches of rooms that become ready while a statement runs share the next.
        self._batches: Batcher[store.RoomBatch, list[int]] = Batcher(
            self._store_batches, tasks, name="commit-rooms"
        )

    async def check_reply(self, room_id: str, seq: int) -> None:
        """A reply names a message of its room (messages are never removed: a tombstone keeps
        its seq, so what is found now is there at the commit)."""
        async with self.db.read() as conn:
            if not await store.message_exists(conn, room_id, seq):
                raise Unprocessable(
                    f"no message {seq} in this room to reply to", code="invalid_reply"
                )

    async def stored(self, room_id: str, user: Principal, client_msg_id: str) -> PostResult | None:
        """The message a post with this ``client_msg_id`` stored already, as its replay."""
        async with self.db.read() as conn:
            found = await store.find_by_client_msg_ids(
                conn, room_id, [(user.user_id, client_msg_id)]
            )
        row = found.get((user.user_id, client_msg_id))
        return None if row is None else PostResult(message_wire(row), created=False)

    async def commit(self, room_id: str, batch: list[Pending]) -> Committed:
        """Commit a batch. The first try stores them all or nothing, shared with the other
        rooms' batches ready at the same time (``_store_batches``). After that failed, each
        transaction inserts the messages skipping those whose ``client_msg_id`` is stored
        already; when some were (retries), it rolls back and the next one reads those and
        stores the rest. Each round learns a key more, so it ends."""
        stored_keys: set[_Key] = set()
        try:
            return await self._commit_once(room_id, batch, stored_keys, one_statement=True)
        except store.StoredAlready as exc:  # retries (SQLite names them)
            stored_keys |= exc.keys
        except (IntegrityError, _SplitUp):
            pass  # a retry, or a refused message: the careful path sorts out which
        while True:
            try:
                return await self._commit_once(room_id, batch, stored_keys)
            except store.StoredAlready as exc:
                stored_keys |= exc.keys

    async def _commit_once(
        self,
        room_id: str,
        batch: list[Pending],
        stored_keys: set[_Key],
        *,
        one_statement: bool = False,
    ) -> Committed:
        now = utcnow()
        rows: list[dict[str, Any]] = []
        # Per post: a stored message's key, an index into rows, or -1 - the index of the row
        # an earlier post of this batch with the same key created.
        slots: list[_Key | int] = []
        fresh: dict[_Key, int] = {}
        for item in batch:
            key = (item.user.user_id, item.client_msg_id) if item.client_msg_id else None
            if key is not None and key in stored_keys:
                slots.append(key)
                continue
            if key is not None and key in fresh:  # a retry within the same batch
                slots.append(-1 - fresh[key])
                continue
            if key is not None:
                fresh[key] = len(rows)
            slots.append(len(rows))
            rows.append(
                {
                    "id": new_id("m"),
                    "room_id": room_id,
                    "seq": 0,  # below, once reserved
                    "author_user_id": item.user.user_id,
                    "author_agent_id": None,
                    "username": item.user.name,
                    "body": item.body,
                    "client_msg_id": item.client_msg_id,
                    "created_at": now,
                    "reply_to_seq": item.reply_to_seq,
                    "mentions": item.mentions,
                    "edited_at": None,
                    "deleted": False,
                    "deleted_by": None,
                    "reactions": [],
                    "ordinal": 0,  # below, with the seq
                }
            )
        replays: dict[_Key, Any] = {}
        event_rows = self.feed.rows(
            "room_message",
            [
                {
                    "room_id": room_id,
                    "user_id": row["author_user_id"],
                    "payload": {"message_id": row["id"]},  # ids only: the text is the message's
                }
                for row in rows
            ],
        )
        events: list[RecordedEvent] = []
        if one_statement and rows:
            positions = await self._batches.submit((room_id, rows, event_rows))
            events = self.feed.recorded(event_rows, positions)
        else:
            async with self.db.begin() as conn:  # StoredAlready rolls it back
                if stored_keys:
                    replays = await store.find_by_client_msg_ids(conn, room_id, list(stored_keys))
                if rows:
                    # The seqs are taken under the room's row lock: commits of a room run one
                    # at a time, in seq order, and a rollback leaves no gap.
                    (positions,) = await store.insert_batches(
                        conn, [(room_id, rows, event_rows)], outbox=self.feed.outbox
                    )
                    events = self.feed.recorded(event_rows, positions)
        for event, row in zip(events, rows, strict=True):  # as published, with the snippet
            event.wire["payload"] = self.feed.message_payload(row["id"], row["body"], False)
        messages = [message_wire(SimpleNamespace(**row)) for row in rows]
        self.metrics.messages.inc(len(rows))
        return Committed(
            [
                PostResult(message_wire(replays[slot]), created=False)
                if isinstance(slot, tuple)
                else PostResult(messages[slot], created=True)
                if slot >= 0
                else PostResult(messages[-1 - slot], created=False)
                for slot in slots
            ],
            [
                (int(row["seq"]), message_frame(room_id, message))
                for row, message in zip(rows, messages, strict=True)
            ],
            events,
            [item.user for item in batch],
        )

    async def _store_batches(
        self, batches: list[store.RoomBatch]
    ) -> list[list[int] | BaseException]:
        """Rooms' batches together, their events' positions (``store.batch_commit``: one
        statement on PostgreSQL, one transaction on SQLite). When several rooms' fail, each of
        them commits on its own (``_SplitUp``): a retry or a refused message in one room never
        fails another's."""
        try:
            answers = await self._commit_batches(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
            log.debug(
                "a statement of %d rooms failed; each commits alone", len(batches), exc_info=True
            )
            return [_SplitUp()] * len(batches)
        self.metrics.commit_rooms.labels("one" if len(batches) == 1 else "several").inc(
            len(batches)
        )
        return [
            positions
            if positions is not None
            else NotFound(f"no room {room_id!r}", code="room_not_found")
            for (room_id, _, _), positions in zip(batches, answers, strict=True)
        ]
