"""Personal events: what the service tells one user on all their presence sockets (every tab and
device, on every instance), such as the rooms' ``notification`` and ``unread.update``.

Events for a user whose sockets may be anywhere are published on the bus channel
``city:personal``, as one envelope of ``(user_id, frame)`` pairs; every instance hands each
frame to its own sockets of that user (``deliver``). What an instance computes for its own
sockets (the rooms' unread pushes) it delivers without the bus. A socket that opens gets the
opening frame (``opening``: the rooms' ``unread.bulk``) with its snapshot, before anything live;
after a bus outage every socket gets it again (events published meanwhile were lost to it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

import orjson

from daarion_city.pubsub import PubSub
from daarion_city.realtime.closes import expulsion
from daarion_city.realtime.connection import Connection

log = logging.getLogger(__name__)

CHANNEL = "city:personal"
Opening = Callable[[str], Awaitable[str]]  # user_id -> the frame a new socket gets


class PersonalEvents:
    def __init__(self, bus: PubSub) -> None:
        self.bus = bus
        self._sockets: dict[str, set[Connection]] = {}
        self.opening: Opening | None = None

    async def start(self) -> None:
        self.bus.add_reconnect_listener(self._after_bus_outage)
        await self.bus.subscribe(CHANNEL, self._on_bus)

    async def stop(self) -> None:
        await self.bus.unsubscribe(CHANNEL, self._on_bus)

    def users(self) -> Collection[str]:
        """The users with a presence socket on this instance."""
        return self._sockets.keys()

    async def open(self, conn: Connection) -> None:
        """Register a socket that is catching up (live events are held until it goes live) and
        queue its opening frame with its snapshot."""
        self._sockets.setdefault(conn.user.user_id, set()).add(conn)
        await self._send_opening(conn, snapshot=True)

    def close(self, conn: Connection) -> None:
        user_id = conn.user.user_id
        sockets = self._sockets.get(user_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self._sockets[user_id]

    def expel_user(self, user_id: str, why: str) -> None:
        """Close the presence sockets of a suspended or erased user here (``closes.expulsion``)."""
        frame, code = expulsion(why)
        for conn in list(self._sockets.get(user_id, ())):
            conn.expel(frame, why, code)

    def deliver(self, user_id: str, frame: str) -> None:
        """A frame to this instance's sockets of the user."""
        for conn in self._sockets.get(user_id, ()):
            conn.send_event(frame)

    async def send(self, frames: list[tuple[str, str]]) -> None:
        """Frames ``(user_id, frame)`` to the users' sockets on every instance (raises when
        the bus is down)."""
        await self.bus.publish(CHANNEL, orjson.dumps(frames))

    def _on_bus(self, data: bytes) -> None:
        for user_id, frame in orjson.loads(data):
            if user_id in self._sockets:
                self.deliver(user_id, frame)

    async def _send_opening(self, conn: Connection, *, snapshot: bool) -> None:
        if self.opening is None:
            return
        try:
            frame = await self.opening(conn.user.user_id)
        except Exception:
            log.warning("opening frame of %s not sent", conn.user.user_id, exc_info=True)
            return
        if snapshot:
            conn.send_snapshot(frame)
        else:
            conn.send_event(frame)

    async def _after_bus_outage(self) -> None:
        for sockets in list(self._sockets.values()):
            for conn in list(sockets):
                await self._send_opening(conn, snapshot=False)
