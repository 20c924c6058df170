"""The public reads of rooms, answered from snapshots (``core/snapshots.py``): the room list
(each room with ``last_message``, ``member_count`` and ``members_online``), each room's detail
(its newest page and its online members) and its pages of messages.

A snapshot is dropped by every change to what it shows, on every instance:

- on the instance that makes the change, right after its commit and before the writer's answer
  (``changed``): posts, edits, deletions and reactions (the group commit), room creation, joins
  and leaves; and when a user's first socket into a room opens or their last one closes
  (``occupancy_changed``);
- on the others, by what the bus brings them: the feed events every instance receives
  (``room_message``, ``message_deleted``, ``room_created``, ``member_joined`` and
  ``member_left`` name their room, ``on_feed``), the rooms' notices of the changes no feed
  event tells (edits, reactions: ``RoomService``), the occupancy notices of channel
  ``city:occupancy`` (after each user's first socket into a room and last one out, the rooms
  of 50 ms in one notice), and presence
  updates, which change the statuses of a detail's online members (``on_presence``, wired by
  the app, as is ``presence_changed`` on the instance that announces one);
- after a bus outage, everything (what was missed cannot be known).

The next read loads the answer again, once for every reader that asks meanwhile: one statement
for the list (with the newest messages joined in) and one round trip for the online counts; one
statement for a detail (the room with its newest messages) while its online members are read;
one statement for a page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from daarion_city.config import Settings
from daarion_city.core.answers import Encoded
from daarion_city.core.errors import NotFound
from daarion_city.core.snapshots import Snapshots
from daarion_city.core.tasks import TaskSet
from daarion_city.feed.service import RecordedEvent
from daarion_city.pubsub import PubSub
from daarion_city.rooms.commit import publish_quietly
from daarion_city.rooms.occupancy import RoomOccupancy
from daarion_city.rooms.schemas import last_message_wire, message_wire, room_wire
from daarion_city.storage import messages as message_store
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database

DETAIL_MESSAGES = 50
OCCUPANCY = "city:occupancy"  # a user's first socket into a room opened, or the last closed
NOTICE_DELAY = 0.05  # seconds an occupancy notice waits for others to go with it
ROOM_KINDS = frozenset(
    {
        "room_message",
        "message_deleted",
        "room_created",
        "room_updated",
        "member_joined",
        "member_left",
    }
)
LISTS = ""  # the one group of the room list's snapshots (one per limit and offset)
StatusLookup = Callable[[list[str]], Awaitable[dict[str, str]]]


@dataclass(frozen=True, slots=True)
class Online:
    """Who is online in a room: the exact ``count``, the mode, the (bounded) ``members``."""

    count: int
    large: bool
    members: list[dict[str, str]]


async def all_online(user_ids: list[str]) -> dict[str, str]:
    return dict.fromkeys(user_ids, "online")


class RoomReads:
    def __init__(
        self,
        *,
        db: Database,
        bus: PubSub,
        occupancy: RoomOccupancy,
        settings: Settings,
        snapshots: Callable[[str], Snapshots],
        resolve: Callable[[str], Awaitable[str]],
        tasks: TaskSet,
        status_of: StatusLookup = all_online,
    ) -> None:
        self.db = db
        self._tasks = tasks
        self._unannounced: set[str] = set()  # rooms whose occupancy notice is to go out
        self._announcing = False
        self.bus = bus
        self.occupancy = occupancy
        self.settings = settings
        self.status_of = status_of
        self._resolve = resolve
        self._lists = snapshots("rooms")
        # Grouped by room id: a room's detail, and its pages of messages.
        self._details = snapshots("room")
        self._pages = snapshots("messages")

    async def start(self) -> None:
        self.bus.add_reconnect_listener(self._after_outage)
        await self.bus.subscribe(OCCUPANCY, self._on_occupancy)

    async def stop(self) -> None:
        await self.bus.unsubscribe(OCCUPANCY, self._on_occupancy)

    # --- reads ----------------------------------------------------------------------------------
    async def room_list(self, *, limit: int, offset: int) -> Encoded:
        return await self._lists.get(
            LISTS, (limit, offset), lambda: self.load_list(limit=limit, offset=offset)
        )

    async def room(self, ref: str) -> Encoded:
        room_id = await self._resolve(ref)
        return await self._details.get(room_id, None, lambda: self.detail(room_id))

    async def page(
        self, ref: str, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> Encoded:
        room_id = await self._resolve(ref)

        async def load() -> dict[str, Any]:
            async with self.db.read() as conn:
                rows, has_more = await message_store.messages_page(
                    conn, room_id, before_seq=before_seq, after_seq=after_seq, limit=limit
                )
            return {"messages": [message_wire(r) for r in rows], "has_more": has_more}

        return await self._pages.get(room_id, (before_seq, after_seq, limit), load)

    async def load_list(self, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """One statement (each room with its newest message), then the online counts."""
        slugs = self.settings.default_room_slugs
        async with self.db.read() as conn:
            rows = await store.list_rooms(conn, slugs, limit=limit, offset=offset)
        counts = await self.occupancy.counts([str(r.id) for r in rows])
        return [
            room_wire(
                row,
                members_online=counts.get(row.id, 0),
                last_message=last_message_wire(row, store.LAST_PREFIX),
            )
            for row in rows
        ]

    async def detail(self, room_id: str) -> dict[str, Any]:
        """A room (by id) with its newest messages and its online members, read now: one
        statement, and the online members read meanwhile."""

        async def newest() -> list[Any]:
            async with self.db.read() as conn:
                return await store.room_with_newest(conn, room_id, DETAIL_MESSAGES)

        rows, online = await asyncio.gather(newest(), self.online(room_id))
        if not rows:
            raise NotFound(f"no room {room_id!r}", code="room_not_found")
        wires = [w for r in rows if (w := last_message_wire(r, store.LAST_PREFIX)) is not None]
        room = room_wire(
            rows[0], members_online=online.count, last_message=wires[-1] if wires else None
        )
        room["messages"] = wires
        room["online_members"] = online.members
        return room

    async def online(self, room_id: str) -> Online:
        """The room's exact count of online users, its mode and at most
        ``CITY_LARGE_ROOM_LIST`` of them with their statuses: by name in a small room, the
        most recently active first in a large one (SPEC 2b)."""
        roster = await self.occupancy.roster(room_id, self.settings.city_large_room_list)
        statuses = await self.status_of([uid for uid, _ in roster.members])
        members = [
            {"user_id": uid, "name": name, "status": statuses.get(uid, "online")}
            for uid, name in roster.members
        ]
        if not roster.large:
            members.sort(key=lambda m: m["name"].lower())
        return Online(roster.online, roster.large, members)

    # --- changes --------------------------------------------------------------------------------
    def changed(self, room_id: str) -> None:
        """A change to a room, committed here or heard of: everything shown of it."""
        self._lists.invalidate(LISTS)
        self._details.invalidate(room_id)
        self._pages.invalidate(room_id)

    async def occupancy_changed(self, room_id: str) -> None:
        """A user's first socket into the room opened, or their last one closed (here): its
        online counts and members, here at once and, by a notice, on the other instances.
        The notices of ``NOTICE_DELAY`` seconds go out together, each room once (a join
        storm would otherwise publish one per socket)."""
        self._on_occupancy(room_id.encode())
        self._unannounced.add(room_id)
        if not self._announcing:
            self._announcing = True
            self._tasks.spawn(self._announce(), name="occupancy-notices")

    async def _announce(self) -> None:
        try:
            await asyncio.sleep(NOTICE_DELAY)
        finally:
            self._announcing = False
        rooms, self._unannounced = self._unannounced, set()
        await publish_quietly(self.bus.publish(OCCUPANCY, "\n".join(sorted(rooms)).encode()))

    def on_feed(self, events: list[RecordedEvent]) -> None:
        """The feed events of one bus item (a batch of posts is one item): each room once."""
        for room_id in {e.wire["room_id"] for e in events if e.wire["kind"] in ROOM_KINDS}:
            self.changed(room_id)

    def on_presence(self, data: bytes) -> None:
        """A presence update from the bus: the statuses shown among the online members may have
        changed."""
        self._details.invalidate_all()

    async def presence_changed(self, user_id: str, frame: str) -> None:
        """The same, on the instance that announces it, before its writer gets an answer."""
        self._details.invalidate_all()

    def _on_occupancy(self, data: bytes) -> None:
        self._lists.invalidate(LISTS)
        for room_id in data.decode().split("\n"):
            self._details.invalidate(room_id)

    async def _after_outage(self) -> None:
        self._lists.invalidate_all()
        self._details.invalidate_all()
        self._pages.invalidate_all()
