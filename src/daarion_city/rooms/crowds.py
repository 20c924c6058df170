"""Large rooms (SPEC 2b, §12) and join storms: the shared ``room.state`` and the coalesced
``room.online`` count of the rooms that have sockets on this instance.

- ``room.state`` is built once for every socket that opens in the same moment (a
  :class:`~daarion_city.core.tasks.FreshFlight` keyed by room: one roster read, one encoded
  frame, each opener getting a read that started after its own socket was counted). It carries
  the exact ``members_online``, ``large`` and at most ``CITY_LARGE_ROOM_LIST`` online members.
- The room's mode is decided by the occupancy (``rooms/occupancy/base.py``), atomically with the
  join or leave that crosses the threshold; the instance whose call crossed it publishes the
  room on ``city:crowd`` and every instance sends a fresh ``room.state`` to its sockets of the
  room. Each instance also reads the count and mode of its rooms every
  ``CITY_ROOM_ONLINE_INTERVAL`` seconds (one pipeline): a large room's sockets get
  ``room.online`` when the count changed since the last one they were told, and a mode that
  changed unseen (a lost notice) gets its fresh ``room.state`` there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from daarion_city.config import Settings
from daarion_city.core.tasks import FreshFlight, TaskSet
from daarion_city.pubsub import PubSub
from daarion_city.realtime.hub import RoomHub
from daarion_city.realtime.protocol import encode
from daarion_city.realtime.transport import text_frame
from daarion_city.rooms.commit import publish_quietly
from daarion_city.rooms.reads import Online, RoomReads

CROSSINGS = "city:crowd"  # a room crossed the large-room threshold (either way)
STATE_SPACING = 0.05  # seconds between two reads of one room's room.state, at least
CHUNK = 500  # sockets told in one go before the loop serves others


@dataclass(frozen=True, slots=True)
class State:
    """A room's ``room.state`` as sent: the channel position it was read at, and the frame
    (as text, and as the WebSocket frame every opener's transport is given)."""

    last_seq: int
    online: Online
    frame: str
    wire: bytes

    def at(self, room_id: str, last_seq: int) -> str:
        """The same frame at another position (a resuming socket's)."""
        if last_seq == self.last_seq:
            return self.frame
        return state_frame(room_id, last_seq, self.online)


def state_frame(room_id: str, last_seq: int, online: Online) -> str:
    return encode(
        {
            "event": "room.state",
            "room_id": room_id,
            "last_seq": last_seq,
            "members_online": online.count,
            "large": online.large,
            "online_members": online.members,
        }
    )


@dataclass(slots=True)
class Local:
    """What this instance knows of a room it has sockets in."""

    sockets: set[int] = field(default_factory=set)  # the ids of its connections here
    large: bool = False  # the mode its sockets were last told
    told: int = -1  # the count they were last told (room.state or room.online); -1: not yet
    refreshing: bool = False  # a fresh room.state is on its way to them
    unexplained: bool = False  # the last tick read a mode they were not told of


class Crowds:
    def __init__(
        self, *, hub: RoomHub, reads: RoomReads, settings: Settings, tasks: TaskSet
    ) -> None:
        self.hub = hub
        self.reads = reads
        self.occupancy = reads.occupancy
        self.bus: PubSub = hub.bus
        self.settings = settings
        self._tasks = tasks
        self._rooms: dict[str, Local] = {}
        self._states: FreshFlight[str, State] = FreshFlight(self._read_state, spacing=STATE_SPACING)

    async def start(self) -> None:
        await self.bus.subscribe(CROSSINGS, self._on_crossing)
        self._tasks.every(self.settings.city_room_online_interval, self.tick, name="room-online")

    async def stop(self) -> None:
        await self.bus.unsubscribe(CROSSINGS, self._on_crossing)

    # --- sockets --------------------------------------------------------------------------------
    def opened(self, room_id: str, conn_id: int) -> None:
        self._rooms.setdefault(room_id, Local()).sockets.add(conn_id)

    def closed(self, room_id: str, conn_id: int) -> None:
        """(Also for a socket that failed to open before :meth:`opened`: nothing to forget.)"""
        local = self._rooms.get(room_id)
        if local is not None:
            local.sockets.discard(conn_id)
            if not local.sockets:
                del self._rooms[room_id]

    async def state(self, room_id: str) -> State:
        """The room's ``room.state``, read after the call (shared by concurrent callers)."""
        state = await self._states.get(room_id)
        local = self._rooms.get(room_id)
        if local is not None and local.told < 0:  # the room's first socket here
            local.large, local.told = state.online.large, state.online.count
        return state

    async def _read_state(self, room_id: str) -> State:
        online = await self.reads.online(room_id)
        try:
            last = self.hub.position(room_id)  # read now: what is delivered after is newer
        except KeyError:  # no socket of the room left here
            last = 0
        frame = state_frame(room_id, last, online)
        return State(last, online, frame, text_frame(frame.encode()))

    # --- crossings and counts -------------------------------------------------------------------
    async def crossed(self, room_id: str) -> None:
        """This instance's call moved the room across the threshold: every instance (this one
        too, through the bus) sends its sockets of the room a fresh ``room.state``."""
        await publish_quietly(self.bus.publish(CROSSINGS, room_id.encode()))

    def _on_crossing(self, data: bytes) -> None:
        self._refresh_soon(data.decode())

    def _refresh_soon(self, room_id: str) -> None:
        local = self._rooms.get(room_id)
        if local is not None and not local.refreshing:
            local.refreshing = True
            self._tasks.spawn(self._refresh(room_id, local), name="room-state")

    async def _refresh(self, room_id: str, local: Local) -> None:
        """A fresh ``room.state`` to every socket of the room here."""
        try:
            state = await self._states.get(room_id)
        finally:
            local.refreshing = False
        local.large = state.online.large
        await self._tell(room_id, state.frame, state.online.count, state.wire)

    async def _tell(self, room_id: str, frame: str, count: int, wire: bytes) -> None:
        """``frame`` to every socket of the room here, ``CHUNK`` at a time (10,000 sockets
        would otherwise hold the loop for tens of milliseconds)."""
        local = self._rooms.get(room_id)
        if local is None:
            return
        local.told = count
        conns = list(self.hub.connections(room_id))
        for start in range(0, len(conns), CHUNK):
            if start:
                await asyncio.sleep(0)
            for conn in conns[start : start + CHUNK]:
                conn.send_event(frame, wire)

    async def tick(self) -> None:
        """Each room's count and mode: ``room.online`` to a large room's sockets when the count
        changed, a fresh ``room.state`` when the mode changed unseen."""
        if not self._rooms:
            return
        crowds = await self.occupancy.crowds(list(self._rooms))
        for room_id, crowd in crowds.items():
            local = self._rooms.get(room_id)
            if local is None:
                continue
            if local.refreshing or local.told < 0:
                continue
            if crowd.large != local.large:
                # Twice in a row: a crossing whose notice did not come (once: it may be on
                # its way).
                if local.unexplained:
                    self._refresh_soon(room_id)
                local.unexplained = not local.unexplained
                continue
            local.unexplained = False
            if crowd.large and crowd.online != local.told:
                frame = encode(
                    {"event": "room.online", "room_id": room_id, "members_online": crowd.online}
                )
                await self._tell(room_id, frame, crowd.online, text_frame(frame.encode()))
