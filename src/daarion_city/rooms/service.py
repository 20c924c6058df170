"""Room policy: rooms, messages with a gapless per-room ``seq``, membership, and live sockets.

A message, whichever way it came in, takes one path (``post``): one transaction writes the
message row with the room's next ``seq`` and its ``room_message`` feed event (a repeated
``client_msg_id`` returns the stored message and writes nothing); only after the commit is it
acknowledged, handed to this instance's sockets and published on the bus, from which every other
instance's hub delivers it to its sockets in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from daarion_city.auth import Principal
from daarion_city.clock import utcnow
from daarion_city.config import Settings
from daarion_city.errors import CityError, Conflict, NotFound
from daarion_city.feed.service import FeedService, RecordedEvent
from daarion_city.ids import new_id
from daarion_city.metrics import Metrics
from daarion_city.ratelimit import RateLimiter
from daarion_city.realtime.caps import SocketCap
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.hub import RoomHub
from daarion_city.realtime.protocol import encode, error_frame
from daarion_city.rooms.occupancy import RoomOccupancy
from daarion_city.rooms.schemas import RoomCreate, message_wire, room_wire
from daarion_city.rooms.typing import RoomTyping
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database
from daarion_city.storage.tables import rooms as rooms_table
from daarion_city.tasks import Batcher, FreshFlight, TaskSet
from daarion_city.validation import is_room_ref

log = logging.getLogger(__name__)

DETAIL_MESSAGES = 50
StatusLookup = Callable[[list[str]], Awaitable[dict[str, str]]]


async def _all_online(user_ids: list[str]) -> dict[str, str]:
    return dict.fromkeys(user_ids, "online")


COMMIT_BATCH = 200


_Key = tuple[str, str]  # (author_user_id, client_msg_id)


@dataclass(slots=True)
class _Pending:
    user: Principal
    body: str
    client_msg_id: str | None
    future: asyncio.Future[PostResult]
    allowed: asyncio.Future[None]  # the rate limit's verdict: done, or RateLimited


def _answer(batch: list[_Pending], results: list[PostResult]) -> None:
    for item, result in zip(batch, results, strict=True):
        if not item.future.done():
            item.future.set_result(result)


async def _allowed(batch: list[_Pending]) -> list[_Pending]:
    """The posts of ``batch`` the rate limit allowed; the others are answered its error."""
    waiting = [item.allowed for item in batch if not item.allowed.done()]
    if waiting:
        await asyncio.wait(waiting)
    kept = []
    for item in batch:
        if item.allowed.cancelled():  # the server is stopping
            item.future.cancel()
        elif (exc := item.allowed.exception()) is None:
            kept.append(item)
        elif not item.future.done():
            item.future.set_exception(exc)
    return kept


class _SplitUp(Exception):
    """A statement of several rooms' batches failed: each room commits on its own."""


@dataclass(frozen=True, slots=True)
class PostResult:
    message: dict[str, Any]
    created: bool


@dataclass(slots=True)
class _Committed:
    """A committed batch: the answers, and what is announced once they are sent."""

    results: list[PostResult]
    frames: list[tuple[int, str]]  # (seq, frame) of the messages it created
    events: list[RecordedEvent]
    users: list[Principal]


class RoomService:
    def __init__(
        self,
        *,
        db: Database,
        hub: RoomHub,
        occupancy: RoomOccupancy,
        feed: FeedService,
        limiter: RateLimiter,
        settings: Settings,
        metrics: Metrics,
        instance_id: str,
        status_of: StatusLookup = _all_online,
    ) -> None:
        self.db = db
        self.hub = hub
        self.occupancy = occupancy
        self.feed = feed
        self.limiter = limiter
        self.settings = settings
        self.metrics = metrics
        self.instance_id = instance_id
        self.status_of = status_of
        self._room_ids: dict[str, str] = {}  # id or slug -> id (rooms are never renamed)
        self._lookups: dict[str, asyncio.Future[str]] = {}
        self._pending: dict[str, list[_Pending]] = {}  # room -> posts waiting for a commit
        self._committing: set[str] = set()
        self.sockets_per_user = SocketCap(settings.city_ws_max_per_user, "room sockets")
        self._tasks = TaskSet("rooms")
        self.typing = RoomTyping(
            hub,
            self._tasks,
            interval=settings.city_typing_interval,
            timeout=settings.city_typing_timeout,
            rate=settings.presence_write_rate,
            burst=settings.presence_write_burst,
        )
        self._members_read = FreshFlight(self.online_members)
        # Group commit across rooms: each room's commit loop makes one batch at a
        # time, and the batches of rooms that become ready while a statement runs share the next.
        self._batches: Batcher[store.RoomBatch, list[int]] = Batcher(
            self._store_batches, self._tasks, name="commit-rooms"
        )

    # --- start-up -------------------------------------------------------------------------------
    async def ensure_default_rooms(self) -> None:
        """Create the rooms named by ``CITY_DEFAULT_ROOMS`` that are missing, and mark exactly
        those as default."""
        slugs = self.settings.default_room_slugs
        async with self.db.begin() as conn:
            missing = [s for s in slugs if s not in await store.existing_slugs(conn, slugs)]
            for slug in missing:
                name = slug.replace("-", " ").replace("_", " ").title()
                await store.insert_room(
                    conn,
                    room_id=f"room_city_{slug}",
                    slug=slug,
                    name=name,
                    description="",
                    created_by=None,
                    created_at=utcnow(),
                    is_default=True,
                )
                await self.feed.record(
                    conn,
                    "room_created",
                    room_id=f"room_city_{slug}",
                    agent_id="ag_system",
                    payload={"slug": slug, "name": name},
                )
            await store.set_default_rooms(conn, slugs)

    async def start(self) -> None:
        await self.maintain()
        self._tasks.every(
            self.settings.presence_sweep_interval, self.maintain, name="room-occupancy"
        )

    async def maintain(self) -> None:
        """Mark this instance alive; announce the departures of sockets of dead instances."""
        for gone in await self.occupancy.maintain(time.time()):
            user = Principal(gone.user_id, gone.name)
            await self._announce_presence_in_room("room.leave", gone.room_id, user)

    # --- rooms ----------------------------------------------------------------------------------
    async def resolve(self, ref: str) -> str:
        """The id of the room named by id or slug, or ``room_not_found``."""
        room_id = self._room_ids.get(ref)
        if room_id is not None:
            return room_id
        if not is_room_ref(ref):  # no such room can exist: the database is not asked
            raise NotFound(f"no room {ref[:80]!r}", code="room_not_found")
        # One lookup per name at a time: a thousand sockets opening at once ask the database once.
        lookup = self._lookups.get(ref)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(ref))
            self._lookups[ref] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(ref, None))
        return await asyncio.shield(lookup)

    async def _lookup(self, ref: str) -> str:
        async with self.db.read() as conn:
            row = await store.find_room(conn, ref)
        if row is None:
            raise NotFound(f"no room {ref!r}", code="room_not_found")
        self._room_ids[row.id] = row.id
        self._room_ids[row.slug] = row.id
        return str(row.id)

    async def _rooms_wire(self, rows: list[Any]) -> list[dict[str, Any]]:
        ids = [str(r.id) for r in rows]
        async with self.db.read() as conn:
            last = await store.last_messages(conn, ids)
        counts = await self.occupancy.counts(ids)
        return [
            room_wire(
                row,
                members_online=counts.get(row.id, 0),
                last_message=message_wire(last[row.id]) if row.id in last else None,
            )
            for row in rows
        ]

    async def list_rooms(self, *, limit: int, offset: int) -> list[dict[str, Any]]:
        slugs = self.settings.default_room_slugs
        rank = sa.case(
            {slug: i for i, slug in enumerate(slugs)}, value=rooms_table.c.slug, else_=len(slugs)
        )
        query = (
            sa.select(rooms_table)
            .order_by(rooms_table.c.is_default.desc(), rank, rooms_table.c.created_at.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.db.read() as conn:
            rows = list((await conn.execute(query)).all())
        return await self._rooms_wire(rows)

    async def get_room(self, ref: str) -> dict[str, Any]:
        room_id = await self.resolve(ref)
        async with self.db.read() as conn:
            row = await store.find_room(conn, room_id)
            messages, _ = await store.messages_page(conn, room_id, limit=DETAIL_MESSAGES)
        assert row is not None
        (room,) = await self._rooms_wire([row])
        room["messages"] = [message_wire(m) for m in messages]
        room["online_members"] = await self.online_members(room_id)
        return room

    async def create_room(self, user: Principal, data: RoomCreate) -> dict[str, Any]:
        await self.limiter.hit(
            f"room:{user.user_id}",
            rate=self.settings.city_room_create_rate,
            burst=self.settings.city_room_create_burst,
        )
        room_id = f"room_city_{data.slug}"
        try:
            async with self.db.begin() as conn:
                if await store.existing_slugs(conn, [data.slug]):
                    raise Conflict(f"room {data.slug!r} exists", code="room_exists")
                await store.insert_room(
                    conn,
                    room_id=room_id,
                    slug=data.slug,
                    name=data.name.strip(),
                    description=data.description,
                    created_by=user.user_id,
                    created_at=utcnow(),
                )
                event = await self.feed.record(
                    conn,
                    "room_created",
                    room_id=room_id,
                    user_id=user.user_id,
                    payload={"slug": data.slug, "name": data.name.strip()},
                )
        except IntegrityError as exc:  # two creators raced past the check
            raise Conflict(f"room {data.slug!r} exists", code="room_exists") from exc
        await self.feed.publish(event)
        return await self.get_room(room_id)

    async def online_members(self, room_id: str) -> list[dict[str, str]]:
        members = await self.occupancy.members(room_id)
        statuses = await self.status_of(list(members))
        return [
            {"user_id": uid, "name": name, "status": statuses.get(uid, "online")}
            for uid, name in sorted(members.items(), key=lambda kv: kv[1].lower())
        ]

    # --- messages -------------------------------------------------------------------------------
    async def messages(
        self, ref: str, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> dict[str, Any]:
        room_id = await self.resolve(ref)
        async with self.db.read() as conn:
            rows, has_more = await store.messages_page(
                conn, room_id, before_seq=before_seq, after_seq=after_seq, limit=limit
            )
        return {"messages": [message_wire(r) for r in rows], "has_more": has_more}

    async def post(
        self, user: Principal, ref: str, body: str, client_msg_id: str | None = None
    ) -> PostResult:
        """Store a message (idempotent on ``client_msg_id``), then broadcast it.

        Group commit: posts to one room wait in that room's queue, and one task commits whatever
        has queued up in one transaction (the room's row lock, the idempotency check, the
        messages and their feed events), answers them, then announces them in ``seq`` order
        (``_announce``). Under load many posts share a commit; alone, a post commits at once.
        Each post is answered only after its commit."""
        room_id = await self.resolve(ref)
        # The rate limit's round trip runs while the post waits for its commit; the commit
        # takes only the posts it allowed and answers the others 429.
        allowed = asyncio.ensure_future(
            self.limiter.hit(
                f"msg:{user.user_id}",
                rate=self.settings.city_message_rate,
                burst=self.settings.city_message_burst,
            )
        )
        item = _Pending(
            user, body, client_msg_id, asyncio.get_running_loop().create_future(), allowed
        )
        self._pending.setdefault(room_id, []).append(item)
        if room_id not in self._committing:
            self._committing.add(room_id)
            self._tasks.spawn(self._commit_loop(room_id), name=f"commit-{room_id}")
        # Shielded: a caller that goes away does not undo its commit (a retry finds it).
        return await asyncio.shield(item.future)

    async def _commit_loop(self, room_id: str) -> None:
        try:
            while queue := self._pending.get(room_id):
                batch = queue[:COMMIT_BATCH]
                del queue[:COMMIT_BATCH]
                batch = await _allowed(batch)
                if not batch:
                    continue
                try:
                    committed = await self._commit(room_id, batch)
                except Exception as exc:
                    if len(batch) > 1 and not isinstance(exc, CityError):
                        # One bad post must not fail the others that shared its commit: each
                        # is tried alone, so only a post that fails by itself gets the error.
                        # (A store that is down fails them all at once instead.)
                        await self._commit_each(room_id, batch)
                        continue
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                _answer(batch, committed.results)
                await self._announce(room_id, committed)
        finally:
            self._committing.discard(room_id)
            if not self._pending.get(room_id):
                self._pending.pop(room_id, None)

    async def _commit_each(self, room_id: str, batch: list[_Pending]) -> None:
        for item in batch:
            try:
                committed = await self._commit(room_id, [item])
            except Exception as exc:  # this post's own failure, answered to it alone
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                _answer([item], committed.results)
                await self._announce(room_id, committed)

    async def _commit(self, room_id: str, batch: list[_Pending]) -> _Committed:
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
        batch: list[_Pending],
        stored_keys: set[_Key],
        *,
        one_statement: bool = False,
    ) -> _Committed:
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
                }
            )
        replays: dict[_Key, Any] = {}
        event_rows = self.feed.rows(
            "room_message",
            [
                {
                    "room_id": room_id,
                    "user_id": row["author_user_id"],
                    "payload": {"message_id": row["id"], "snippet": row["body"][:100]},
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
                    (positions,) = await store.insert_batches(conn, [(room_id, rows, event_rows)])
                    events = self.feed.recorded(event_rows, positions)
        messages = [message_wire(SimpleNamespace(**row)) for row in rows]
        self.metrics.messages.inc(len(rows))
        return _Committed(
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
        """Rooms' batches together, their events' positions: one statement on PostgreSQL,
        one transaction on SQLite. When several rooms' fail, each of them commits on its own
        (``_SplitUp``): a retry or a refused message in one room never fails another's."""
        answers: Sequence[list[int] | None]
        try:
            if self.db.is_sqlite:
                async with self.db.begin() as conn:
                    answers = await store.insert_batches(conn, batches)
            else:
                async with self.db.autocommit() as conn:
                    answers = await store.insert_batches_pg(conn, batches)
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

    async def _announce(self, room_id: str, committed: _Committed) -> None:
        """After the answers: a committed batch to this instance's sockets, then to the bus in
        one round trip (its messages as one envelope, one write per socket, then their feed
        events as another). The answers do not wait for the bus: a publish that fails is
        healed like any lost one (hubs read the gap from the database; feed streams resume
        with Last-Event-ID). The next batch of the room commits after this one is published,
        so the bus carries a room's messages in ``seq`` order."""
        if frames := committed.frames:
            self.hub.deliver_local(room_id, frames)
            items = [self.hub.messages_item(room_id, frames), self.feed.item(committed.events)]
            try:
                await self.hub.bus.publish_many(items)
            except Exception:
                self.hub.publish_failed(room_id, frames[-1][0])
                log.warning("publishing on the bus failed", exc_info=True)
        for user in committed.users:
            self.typing.clear(room_id, user)

    async def _publish(self, publishing: Awaitable[None]) -> None:
        """Publishing happens after a commit: a bus failure is logged, never turned into a
        failed request (the hubs heal gaps from the database)."""
        try:
            await publishing
        except Exception:
            log.warning("publishing on the bus failed", exc_info=True)

    # --- membership -----------------------------------------------------------------------------
    async def set_membership(self, user: Principal, ref: str, *, join: bool) -> str:
        room_id = await self.resolve(ref)
        event: RecordedEvent | None = None
        async with self.db.begin() as conn:
            if join:
                changed = await store.add_member(conn, room_id, user.user_id, user.name, utcnow())
            else:
                changed = await store.remove_member(conn, room_id, user.user_id)
            if changed:
                event = await self.feed.record(
                    conn,
                    "member_joined" if join else "member_left",
                    room_id=room_id,
                    user_id=user.user_id,
                    payload={"name": user.name},
                )
        if event is not None:
            frame = encode(
                {
                    "event": "room.member",
                    "room_id": room_id,
                    "user_id": user.user_id,
                    "name": user.name,
                    "membership": "join" if join else "leave",
                }
            )
            await self._publish(self.hub.publish_event(room_id, frame))
            await self.feed.publish(event)
        return room_id

    # --- sockets --------------------------------------------------------------------------------
    def _socket_key(self, conn: Connection) -> str:
        return f"{self.instance_id}:{conn.id}"

    def reserve_socket(self, user: Principal) -> None:
        """Raises ``TooManySockets`` past ``CITY_WS_MAX_PER_USER`` on this instance."""
        self.sockets_per_user.reserve(user.user_id)

    def release_socket(self, user: Principal) -> None:
        self.sockets_per_user.release(user.user_id)

    async def open_socket(self, conn: Connection, since_seq: int | None) -> None:
        """Attach a socket: ``room.state``, the ``since_seq`` replay, then live delivery."""
        room_id, user = conn.room_id, conn.user
        await self.hub.attach(conn)
        first = await self.occupancy.add(room_id, user.user_id, user.name, self._socket_key(conn))
        last = self.hub.position(room_id)
        replay: list[Any] = []
        resync = False
        if since_seq is not None:
            # A resume reads the database; a fresh socket starts where the channel is, for free.
            async with self.db.read() as db_conn:
                last = max(last, await store.last_seq(db_conn, room_id))
                resync = since_seq > last or last - since_seq > self.settings.city_resume_limit
                if not resync and since_seq < last:
                    replay, _ = await store.messages_page(
                        db_conn, room_id, after_seq=since_seq, limit=self.settings.city_resume_limit
                    )
        conn.send_snapshot(
            encode(
                {
                    "event": "room.state",
                    "room_id": room_id,
                    "last_seq": last,
                    "online_members": await self._members_read.get(room_id),
                }
            )
        )
        if resync:
            conn.send_snapshot(
                error_frame(
                    "resync_required",
                    f"cannot resume from seq {since_seq}: reload the history over HTTP",
                )
            )
        top = last
        for row in replay:
            conn.send_snapshot(message_frame(room_id, message_wire(row)))
            top = max(top, int(row.seq))
        conn.go_live(top)
        conn.start()
        if first:
            await self._announce_presence_in_room("room.join", room_id, user)

    async def close_socket(self, conn: Connection) -> None:
        room_id, user = conn.room_id, conn.user
        self.hub.detach(conn)
        last = await self.occupancy.remove(room_id, user.user_id, self._socket_key(conn))
        if last:
            self.typing.clear(room_id, user)
            await self._announce_presence_in_room("room.leave", room_id, user)

    async def _announce_presence_in_room(self, event: str, room_id: str, user: Principal) -> None:
        """``room.join`` / ``room.leave`` to the others in the room."""
        frame = encode(
            {"event": event, "room_id": room_id, "user_id": user.user_id, "name": user.name}
        )
        await self._publish(self.hub.publish_event(room_id, frame, exclude_user=user.user_id))

    async def stop(self) -> None:
        self.typing.stop()
        await self._tasks.close()


async def load_frames(
    db: Database, room_id: str, after_seq: int, limit: int
) -> list[tuple[int, str]]:
    """Room messages after ``after_seq`` as ready-to-send frames (the hub heals gaps with it)."""
    async with db.read() as conn:
        rows, _ = await store.messages_page(conn, room_id, after_seq=after_seq, limit=limit)
    return [(int(r.seq), message_frame(room_id, message_wire(r))) for r in rows]


async def load_last_seq(db: Database, room_id: str) -> int:
    async with db.read() as conn:
        return await store.last_seq(conn, room_id)


def message_frame(room_id: str, message: dict[str, Any]) -> str:
    return encode({"event": "room.message", "room_id": room_id, "message": message})
