"""Socket life in a room: a user's socket cap, opening (``room.state``, the ``since_seq``
replay or ``resync_required``, then live delivery), closing, ``room.join`` / ``room.leave`` to
the others while the room is small (a large room's count goes out as ``room.online``,
``rooms/crowds.py``), typing notices, and the upkeep of the occupancy (dead instances, failed
removals). Presence changes reach the sockets of small rooms through ``publish_presence``
(presence's publisher)."""

from __future__ import annotations

import time

from daarion_city.config import Settings
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.realtime.caps import SocketCap
from daarion_city.realtime.closes import expulsion
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.hub import RoomHub
from daarion_city.realtime.protocol import encode, error_frame
from daarion_city.rooms.commit import publish_quietly
from daarion_city.rooms.crowds import Crowds
from daarion_city.rooms.occupancy import Departure, Occupied, RoomOccupancy
from daarion_city.rooms.reads import RoomReads
from daarion_city.rooms.timeline import timeline_frames
from daarion_city.rooms.typing import RoomTyping
from daarion_city.storage import messages as store
from daarion_city.storage.database import Database

HEAL_INTERVAL = 1.0  # seconds between retries of the occupancy's failed removals


class RoomSockets:
    """The room sockets of this instance, and what their opening and closing tell the room."""

    def __init__(
        self,
        *,
        db: Database,
        hub: RoomHub,
        occupancy: RoomOccupancy,
        settings: Settings,
        instance_id: str,
        tasks: TaskSet,
        reads: RoomReads,
    ) -> None:
        self.db = db
        self.hub = hub
        self.occupancy = occupancy
        self.settings = settings
        self.instance_id = instance_id
        self.sockets_per_user = SocketCap(settings.city_ws_max_per_user, "room sockets")
        self._tasks = tasks
        self.typing = RoomTyping(
            hub,
            tasks,
            interval=settings.city_typing_interval,
            timeout=settings.city_typing_timeout,
            rate=settings.presence_write_rate,
            burst=settings.presence_write_burst,
        )
        self.crowds = Crowds(hub=hub, reads=reads, settings=settings, tasks=tasks)
        self._occupancy_changed = reads.occupancy_changed

    async def start(self) -> None:
        await self.maintain()
        self._tasks.every(
            self.settings.presence_sweep_interval, self.maintain, name="room-occupancy"
        )
        self._tasks.every(HEAL_INTERVAL, self.heal, name="room-occupancy-heal")
        await self.crowds.start()

    async def stop(self) -> None:
        self.typing.stop()
        await self.crowds.stop()

    async def maintain(self) -> None:
        """Mark this instance alive; announce the departures of sockets of dead instances and
        of this instance's sockets whose removal had failed."""
        await self._departed(await self.occupancy.maintain(time.time()))

    async def heal(self) -> None:
        """Retry the removals that failed (a Redis timeout in a storm), about every second."""
        await self._departed(await self.occupancy.heal())

    async def _departed(self, departures: list[Departure]) -> None:
        for gone in departures:
            await self._changed(gone.room_id, gone.occupied, "room.leave", gone.user_id, gone.name)

    async def _changed(
        self, room_id: str, occupied: Occupied, event: str, user_id: str, name: str
    ) -> None:
        """After an add or a remove: the room's reads are dropped, here and there, and the
        others are told of a join or leave (small room), or of the crossing of the threshold
        (a fresh ``room.state``)."""
        if occupied.changed or occupied.crossed:
            await self._occupancy_changed(room_id)
        if occupied.crossed:
            await self.crowds.crossed(room_id)
        elif occupied.changed and not occupied.large:
            await self._announce_presence_in_room(event, room_id, Principal(user_id, name))

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
        self.crowds.opened(room_id, conn.id)
        occupied = await self.occupancy.add(
            room_id, user.user_id, user.name, self._socket_key(conn)
        )
        # Told at once, before this socket's own room.state is read: a join counted while the
        # room was small reaches the others before the crossing that follows it.
        await self._changed(room_id, occupied, "room.join", user.user_id, user.name)
        state = await self.crowds.state(room_id)  # one read and frame for all who open now
        last = state.last_seq
        replay: list[tuple[int, str]] = []
        resync = False
        if since_seq is not None:
            # A resume reads the database; a fresh socket starts where the channel is, for free.
            async with self.db.read() as db_conn:
                last = max(last, await store.last_seq(db_conn, room_id))
            resync = since_seq > last or last - since_seq > self.settings.city_resume_limit
            if not resync and since_seq < last:
                replay = await timeline_frames(
                    self.db, room_id, since_seq, self.settings.city_resume_limit
                )
        conn.send_snapshot(state.at(room_id, last), state.wire if last == state.last_seq else None)
        if resync:
            conn.send_snapshot(
                error_frame(
                    "resync_required",
                    f"cannot resume from seq {since_seq}: reload the history over HTTP",
                )
            )
        top = last
        for seq, frame in replay:
            conn.send_snapshot(frame)
            top = max(top, seq)
        conn.go_live(top)
        conn.start()

    def expel(self, room_id: str, user_id: str, code: str) -> None:
        """Close the user's sockets of the room here: an ``error`` ``code`` (``banned``,
        ``kicked``), then 4403 (the moderation notices, ``rooms/policy.py``)."""
        frame = error_frame(code, f"you were {code} from this room")
        for conn in list(self.hub.connections(room_id)):
            if conn.user.user_id == user_id and not conn.closing:
                conn.expel(frame, code)

    def expel_user(self, user_id: str, why: str) -> None:
        """Close every room socket of a suspended or erased user here (``closes.expulsion``)."""
        frame, code = expulsion(why)
        for conn in self.hub.all_connections():
            if conn.user.user_id == user_id and not conn.closing:
                conn.expel(frame, why, code)

    async def close_socket(self, conn: Connection) -> None:
        room_id, user = conn.room_id, conn.user
        self.hub.detach(conn)
        self.crowds.closed(room_id, conn.id)
        occupied = await self.occupancy.remove(room_id, user.user_id, self._socket_key(conn))
        if occupied.changed:
            self.typing.clear(room_id, user)
        await self._changed(room_id, occupied, "room.leave", user.user_id, user.name)

    async def _announce_presence_in_room(self, event: str, room_id: str, user: Principal) -> None:
        """``room.join`` / ``room.leave`` to the others in the room."""
        frame = encode(
            {"event": event, "room_id": room_id, "user_id": user.user_id, "name": user.name}
        )
        await publish_quietly(self.hub.publish_event(room_id, frame, exclude_user=user.user_id))

    async def publish_presence(self, user_id: str, frame: str) -> None:
        """A user's ``presence.update`` frame to every small room they have a socket in (none
        to a large room's sockets, SPEC §12; presence's publisher: when it fails, presence
        announces the change again once the bus is back)."""
        rooms = await self.occupancy.rooms_of(user_id)
        for room_id, crowd in (await self.occupancy.crowds(rooms)).items():
            if not crowd.large:
                await self.hub.publish_event(room_id, frame)
