"""The local hub: which sockets of this instance are in which room, and in-order delivery to them.

Every room with a local socket has a :class:`~daarion_city.realtime.channel.RoomChannel`
(``realtime/channel.py``) subscribed to the bus channel ``room:{room_id}``. Room messages travel
the bus with their ``seq``; the channel hands them to its sockets strictly in ``seq`` order with
no gap:

- a message with ``seq`` below the next expected one is a repeat and is dropped;
- one above it is held, and if the missing ones do not arrive within ``gap_grace`` seconds
  (the bus is at-most-once, and concurrent publishers may race) they are read from the database;
- the messages this instance commits reach its own sockets during their publish, without a trip
  through Redis (the bus hands a process's own publications to its handlers at once, even while
  Redis is down, and drops their echo unread: ``pubsub/redis.py``);
- when the bus reconnects after an outage every channel reads what it missed from the database;
- a publisher whose publish failed (the bus was down) announces, once the bus is back, the newest
  ``seq`` of each such room with a *heal* envelope, so subscribers that reconnected first still
  learn about messages committed during the outage, even when no later message would show the gap;
- every ``reconcile_interval`` seconds each channel compares its position with the database, a
  last resort for a publisher that died between its commit and its publish.

Ephemeral events (join/leave, typing, membership, presence) carry no ``seq`` and are delivered as
they come. Each frame is encoded once by the publisher and the same text is queued on every socket;
the messages a channel delivers together reach each socket as one write (``realtime/channel.py``).
"""

from __future__ import annotations

import logging

from daarion_city.core.errors import Unavailable
from daarion_city.core.provided import Key
from daarion_city.core.tasks import TaskSet
from daarion_city.pubsub import PubSub
from daarion_city.realtime.channel import (
    FramesLoader,
    LastSeqLoader,
    RoomChannel,
    batch_envelope,
    channel_name,
    event_envelope,
    heal_envelope,
    message_envelope,
)
from daarion_city.realtime.connection import Connection

log = logging.getLogger(__name__)


class RoomHub:
    """All room channels of this instance."""

    def __init__(
        self,
        bus: PubSub,
        *,
        load_frames: FramesLoader,
        load_last_seq: LastSeqLoader,
        gap_grace: float = 0.2,
        reconcile_interval: float = 10.0,
    ) -> None:
        self.bus = bus
        self.load_frames = load_frames
        self.load_last_seq = load_last_seq
        self.gap_grace = gap_grace
        self._channels: dict[str, RoomChannel] = {}
        self._tasks = TaskSet("hub")
        self._unpublished: dict[str, int] = {}  # room -> newest seq whose publish failed
        self.reconcile_interval = reconcile_interval
        self.delivered = 0
        self.healed = 0
        bus.add_reconnect_listener(self.heal_all)

    @property
    def connection_count(self) -> int:
        return sum(len(ch.connections) for ch in self._channels.values())

    def position(self, room_id: str) -> int:
        """The newest ``seq`` this instance has delivered in the room (its channel must be open):
        a socket that starts there misses nothing, since anything newer is still to come."""
        channel = self._channels[room_id]
        assert channel.expected is not None
        return channel.expected - 1

    def fast_sockets(self, room_id: str) -> int:
        """How many sockets the room's fast list holds (``realtime/fast.py``; 0: none)."""
        channel = self._channels.get(room_id)
        return len(channel.fast.conns) if channel is not None else 0

    def all_connections(self) -> list[Connection]:
        return [conn for ch in self._channels.values() for conn in ch.connections]

    def connections(self, room_id: str) -> set[Connection]:
        channel = self._channels.get(room_id)
        return set(channel.connections) if channel is not None else set()

    async def attach(self, conn: Connection) -> None:
        """Register a connection (in catch-up mode) and make sure its room channel is live."""
        channel = self._channels.get(conn.room_id)
        if channel is None:
            channel = RoomChannel(self, conn.room_id)
            self._channels[conn.room_id] = channel
            channel.add(conn)
            try:
                await self.bus.subscribe(channel_name(conn.room_id), channel.on_bus)
                channel.initialise(await self.load_last_seq(conn.room_id))
            except BaseException:
                self._drop_channel(channel)
                channel.ready.set()
                raise
        else:
            channel.add(conn)
            await channel.ready.wait()
            if self._channels.get(conn.room_id) is not channel:
                channel.discard(conn)
                raise Unavailable("the room channel could not be opened")

    def detach(self, conn: Connection) -> None:
        channel = self._channels.get(conn.room_id)
        if channel is None:
            return
        channel.discard(conn)
        if not channel.connections and channel.ready.is_set():
            self._drop_channel(channel)

    def _drop_channel(self, channel: RoomChannel) -> None:
        if self._channels.get(channel.room_id) is channel:
            del self._channels[channel.room_id]
        channel.close()
        self._tasks.spawn(self.bus.unsubscribe(channel_name(channel.room_id), channel.on_bus))

    def start(self) -> None:
        self._tasks.every(self.reconcile_interval, self.reconcile, name="hub-reconcile")

    def message_item(self, room_id: str, seq: int, frame: str) -> tuple[str, bytes]:
        """A room message as a bus item, for a caller that publishes several at once."""
        return channel_name(room_id), message_envelope(seq, frame)

    def messages_item(self, room_id: str, items: list[tuple[int, str]]) -> tuple[str, bytes]:
        """Messages of one room committed together, as one bus item (delivered as one write
        per socket)."""
        if len(items) == 1:
            return self.message_item(room_id, *items[0])
        return channel_name(room_id), batch_envelope(items)

    def publish_failed(self, room_id: str, seq: int) -> None:
        """Messages up to ``seq`` may not have reached the bus: announced again on reconnect."""
        self._unpublished[room_id] = max(seq, self._unpublished.get(room_id, 0))

    async def publish_message(self, room_id: str, seq: int, frame: str) -> None:
        try:
            await self.bus.publish(*self.message_item(room_id, seq, frame))
        except Exception:
            self.publish_failed(room_id, seq)
            raise

    async def publish_event(
        self, room_id: str, frame: str, exclude_user: str | None = None
    ) -> None:
        await self.bus.publish(channel_name(room_id), event_envelope(frame, exclude_user))

    async def heal_all(self) -> None:
        """After a bus outage: tell the others what was committed but not published, and read
        what this instance's channels may have missed."""
        unpublished, self._unpublished = self._unpublished, {}
        for room_id, seq in unpublished.items():
            try:
                await self.bus.publish(channel_name(room_id), heal_envelope(seq))
            except Exception:
                self._unpublished[room_id] = max(seq, self._unpublished.get(room_id, 0))
                log.warning("room %s: heal announcement failed; will retry", room_id)
        for channel in list(self._channels.values()):
            await channel.heal(catch_up=True)

    async def reconcile(self) -> None:
        """Compare every channel's position with the database; heal a channel left behind."""
        if self._unpublished:
            await self.heal_all()
        for channel in list(self._channels.values()):
            if channel.expected is None:
                continue
            if await self.load_last_seq(channel.room_id) >= channel.expected:
                channel.on_committed(channel.expected)

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            channel.close()
        self._channels.clear()
        await self._tasks.close()


HUB: Key[RoomHub] = Key("hub")
