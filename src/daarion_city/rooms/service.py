"""Rooms and their membership: the rooms (looked up by id or slug, created, the default
ones), and who joined them.

A room's three collaborators are built here and reached through it: its group commit
(``commit``, ``rooms/commit.py``: how a message is stored, acknowledged and announced), its
sockets (``sockets``, ``rooms/sockets.py``: socket life in a room, typing, occupancy) and its
public reads (``reads``, ``rooms/reads.py``: the list, the details and the pages, from
snapshots that every change drops).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from daarion_city.config import Settings
from daarion_city.core.clock import utcnow
from daarion_city.core.errors import Conflict, NotFound
from daarion_city.core.metrics import Metrics
from daarion_city.core.provided import Key
from daarion_city.core.snapshots import Snapshots
from daarion_city.core.tasks import TaskSet
from daarion_city.core.validation import is_room_ref
from daarion_city.feed.service import FeedService
from daarion_city.identity.known import KnownUsers
from daarion_city.identity.principal import Principal
from daarion_city.ratelimit import RateLimiter
from daarion_city.realtime.hub import RoomHub
from daarion_city.rooms.changecommit import ROOM_NOTICES
from daarion_city.rooms.commit import GroupCommit
from daarion_city.rooms.membership import Membership
from daarion_city.rooms.moderation import Moderation
from daarion_city.rooms.occupancy import RoomOccupancy
from daarion_city.rooms.policy import Policies
from daarion_city.rooms.reads import RoomReads, StatusLookup, all_online
from daarion_city.rooms.reports import Reports
from daarion_city.rooms.schemas import RoomCreate
from daarion_city.rooms.search import MessageSearch
from daarion_city.rooms.sockets import RoomSockets
from daarion_city.rooms.timeline import Timeline, timeline_frames
from daarion_city.rooms.unread import Personal, Unread
from daarion_city.rooms.unreadpush import UnreadPush
from daarion_city.storage import messages as message_store
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database


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
        snapshots: Callable[[str], Snapshots],
        personal: Personal,
        known: KnownUsers,
        status_of: StatusLookup = all_online,
    ) -> None:
        self.db = db
        self.hub = hub
        self.occupancy = occupancy
        self.feed = feed
        self.limiter = limiter
        self.settings = settings
        self.metrics = metrics
        self._room_ids: dict[str, str] = {}  # id or slug -> id (rooms are never renamed)
        self._lookups: dict[str, asyncio.Future[str]] = {}
        self._tasks = TaskSet("rooms")
        self.listeners: list[Callable[[str], None]] = []  # told of each committed change
        self.policies = Policies(db, hub.bus, settings.admins, limiter)
        self.reads = RoomReads(
            db=db,
            bus=hub.bus,
            occupancy=occupancy,
            settings=settings,
            snapshots=snapshots,
            resolve=self.resolve,
            tasks=self._tasks,
            status_of=status_of,
        )
        self.search = MessageSearch(db, settings, limiter, self.resolve)
        self.sockets = RoomSockets(
            db=db,
            hub=hub,
            occupancy=occupancy,
            settings=settings,
            instance_id=instance_id,
            tasks=self._tasks,
            reads=self.reads,
        )
        self.unread = Unread(
            db=db,
            settings=settings,
            limiter=limiter,
            resolve=self.resolve,
            personal=personal,
            known=known,
            tasks=self._tasks,
        )
        self.commit = GroupCommit(
            db=db,
            hub=hub,
            feed=feed,
            limiter=limiter,
            settings=settings,
            metrics=metrics,
            tasks=self._tasks,
            resolve=self.resolve,
            typing=self.sockets.typing,
            committed=self._committed,
            notify=self.unread.notify,
            policies=self.policies,
        )
        self.unread_push = UnreadPush(
            db=db,
            interval=settings.city_unread_push_interval,
            local_users=personal.users,
            deliver=personal.deliver,
            metrics=metrics,
            tasks=self._tasks,
        )

        self.timeline = Timeline(
            db,
            feed,
            max_mentions=settings.city_max_mentions,
            resolve=self.resolve,
            submit=self.commit.change,
            policies=self.policies,
        )
        self.moderation = Moderation(
            db=db, feed=feed, policies=self.policies, resolve=self.resolve, changed=self._committed
        )
        self.policies.on_expel = self.sockets.expel
        self.membership = Membership(
            db=db,
            hub=hub,
            feed=feed,
            policies=self.policies,
            resolve=self.resolve,
            changed=self.reads.changed,
        )
        self.reports = Reports(
            db=db,
            policies=self.policies,
            moderation=self.moderation,
            timeline=self.timeline,
            resolve=self.resolve,
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
        await self.reads.start()
        self.feed.add_listener(self.reads.on_feed)
        self.feed.add_listener(self.unread_push.on_feed)
        await self.hub.bus.subscribe(ROOM_NOTICES, self._on_notice)
        await self.policies.start()
        await self.sockets.start()

    async def stop(self) -> None:
        await self.sockets.stop()
        await self.hub.bus.unsubscribe(ROOM_NOTICES, self._on_notice)
        await self.policies.stop()
        await self.reads.stop()
        await self._tasks.close()

    def _committed(self, room_id: str) -> None:
        """The room's timeline changed (committed here): what the reads show of it is dropped,
        and the feed's pages (their snippets show messages as they are); the listeners (the
        Matrix bridge) are told."""
        self.reads.changed(room_id)
        self.feed.changed()
        for listener in self.listeners:
            listener(room_id)

    async def room_changed(self, room_id: str) -> None:
        """Something shown of the room changed outside its timeline (its Matrix mapping): the
        reads of every instance drop it."""
        self._committed(room_id)
        await self.hub.bus.publish(ROOM_NOTICES, room_id.encode())

    def _on_notice(self, data: bytes) -> None:
        """The same, told by another instance for a change no feed event tells (an edit, a
        reaction)."""
        self._committed(data.decode())

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
        self.reads.changed(room_id)
        await self.feed.publish(event)
        return await self.reads.detail(room_id)


async def load_frames(
    db: Database, room_id: str, after_seq: int, limit: int
) -> list[tuple[int, str]]:
    """The room's timeline after ``after_seq`` as ready-to-send frames (the hub heals gaps
    with it)."""
    return await timeline_frames(db, room_id, after_seq, limit)


async def load_last_seq(db: Database, room_id: str) -> int:
    async with db.read() as conn:
        return await message_store.last_seq(conn, room_id)


ROOMS: Key[RoomService] = Key("rooms")
