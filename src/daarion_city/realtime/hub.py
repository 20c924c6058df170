"""The local hub: which sockets of this instance are in which room, and in-order delivery to them.

Every room with a local socket has a :class:`RoomChannel` subscribed to the bus channel
``room:{room_id}``. Room messages travel the bus with their ``seq``; the channel hands them to its
sockets strictly in ``seq`` order with no gap:

- a message with ``seq`` below the next expected one is a repeat and is dropped;
- one above it is held, and if the missing ones do not arrive within ``gap_grace`` seconds
  (the bus is at-most-once, and concurrent publishers may race) they are read from the database;
- the messages this instance commits reach its own sockets without the bus (``deliver_local``),
  and their echo from the bus is a repeat;
- when the bus reconnects after an outage every channel reads what it missed from the database;
- a publisher whose publish failed (the bus was down) announces, once the bus is back, the newest
  ``seq`` of each such room with a *heal* envelope, so subscribers that reconnected first still
  learn about messages committed during the outage, even when no later message would show the gap;
- every ``reconcile_interval`` seconds each channel compares its position with the database, a
  last resort for a publisher that died between its commit and its publish.

Ephemeral events (join/leave, typing, membership, presence) carry no ``seq`` and are delivered as
they come. Each frame is encoded once by the publisher and the same text is queued on every socket.

Write coalescing: the messages a channel delivers together reach each socket as one write of
their frames back to back, as Centrifugo and Discord's gateway coalesce writes. Messages from
the bus go to the channel's inbox, which is drained once per event-loop turn: what arrived
while the loop was busy (the messages of one group commit travel as one *batch* envelope, and
others pile up in the bus connection while a fan-out runs) goes out together, along with any
release of held messages or heal. Nothing waits for a batch to fill: a message that arrives
alone is written in the same loop turn, so the number of write syscalls per socket falls only
as the load rises. An ephemeral event drains the inbox first, so it never overtakes a message
that arrived before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from daarion_city.errors import Unavailable
from daarion_city.pubsub import PubSub
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.transport import DirectWriter, text_frame
from daarion_city.tasks import TaskSet

log = logging.getLogger(__name__)

FramesLoader = Callable[[str, int, int], Awaitable[list[tuple[int, str]]]]
"""``(room_id, after_seq, limit) -> [(seq, frame), ...]`` in ``seq`` order, from the database."""
LastSeqLoader = Callable[[str], Awaitable[int]]

MAX_HELD = 10_000
HEAL_BATCH = 500


def channel_name(room_id: str) -> str:
    return f"room:{room_id}"


def message_envelope(seq: int, frame: str) -> bytes:
    return b"m:%d\n" % seq + frame.encode()


def batch_envelope(items: list[tuple[int, str]]) -> bytes:
    """Several messages of one room, in ``seq`` order: ``b:seq:len,seq:len...\n`` + frames."""
    frames = [frame.encode() for _, frame in items]
    head = b",".join(b"%d:%d" % (seq, len(f)) for (seq, _), f in zip(items, frames, strict=True))
    return b"b:" + head + b"\n" + b"".join(frames)


def parse_batch(head: bytes, body: bytes) -> list[tuple[int, str]]:
    items, pos = [], 0
    for part in head.split(b","):
        seq, _, length = part.partition(b":")
        end = pos + int(length)
        items.append((int(seq), body[pos:end].decode()))
        pos = end
    return items


def event_envelope(frame: str, exclude_user: str | None) -> bytes:
    return b"e:" + (exclude_user or "").encode() + b"\n" + frame.encode()


def heal_envelope(seq: int) -> bytes:
    return b"h:%d\n" % seq


class RoomChannel:
    """The sockets of one room on this instance, fed in ``seq`` order."""

    def __init__(self, hub: RoomHub, room_id: str) -> None:
        self.hub = hub
        self.room_id = room_id
        self.connections: set[Connection] = set()
        self.expected: int | None = None  # next seq to deliver; None until initialised
        self._held: dict[int, str] = {}
        self._run: list[tuple[int, str]] | None = None  # deliveries being coalesced
        self._inbox: list[tuple[int, str]] = []  # from the bus, drained once per loop turn
        self._draining = False
        self._heal_task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # --- bus input --------------------------------------------------------------------------
    def on_bus(self, data: bytes) -> None:
        head, _, body = data.partition(b"\n")
        if head[:2] == b"m:":
            self.receive([(int(head[2:]), body.decode())])
        elif head[:2] == b"b:":
            self.receive(parse_batch(head[2:], body))
        elif head[:2] == b"e:":
            self.drain()
            self.on_event(body.decode(), head[2:].decode() or None)
        elif head[:2] == b"h:":
            self.drain()
            self.on_committed(int(head[2:]))
        else:
            log.warning("room %s: unknown envelope %r", self.room_id, head[:16])

    def receive(self, items: list[tuple[int, str]]) -> None:
        """Messages to deliver (from the bus, or committed here), coalesced per loop turn."""
        self._inbox += items
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self.drain)

    def drain(self) -> None:
        """Deliver what the bus brought since the last drain, coalesced."""
        self._draining = False
        if self._inbox:
            items, self._inbox = self._inbox, []
            self.on_messages(items)

    def on_event(self, frame: str, exclude_user: str | None) -> None:
        wire = text_frame(frame.encode()) if len(self.connections) > 1 else None
        for conn in self.connections:
            if conn.user.user_id != exclude_user:
                conn.send_event(frame, wire)

    def on_message(self, seq: int, frame: str) -> None:
        expected = self.expected
        if expected is None or seq > expected:
            self._held[seq] = frame
            if expected is not None:
                self._schedule_heal(0.0 if len(self._held) > MAX_HELD else self.hub.gap_grace)
            return
        if seq < expected:
            return
        self._deliver(seq, frame)
        self._release_held()

    def on_messages(self, items: list[tuple[int, str]]) -> None:
        """Several messages at once: each is ordered as by :meth:`on_message`, and those that
        become deliverable reach each socket in one write. (Never re-entered: delivery only
        writes to sockets, and heals run as tasks.)"""
        self._run = []
        try:
            for seq, frame in items:
                self.on_message(seq, frame)
        finally:
            run, self._run = self._run, None
            if run:
                self._write(run)

    def on_committed(self, seq: int) -> None:
        """Messages up to ``seq`` are committed: read any this channel has not delivered."""
        if self.expected is not None and seq >= self.expected:
            self._schedule_heal(0.0, catch_up=True)

    def _deliver(self, seq: int, frame: str) -> None:
        self.expected = seq + 1
        if self._run is not None:
            self._run.append((seq, frame))
        else:
            self._write([(seq, frame)])

    def _write(self, run: list[tuple[int, str]]) -> None:
        """Consecutive messages to every socket: each framed once, and all of them written to
        each socket as one buffer."""
        wires = [text_frame(frame.encode()) for _, frame in run]
        joined = wires[0] if len(wires) == 1 else b"".join(wires)
        direct = 0
        for conn in self.connections:
            if conn.send_run(run, wires, joined):
                direct += 1
        self.hub.delivered += len(self.connections) * len(run)
        DirectWriter.writes += direct

    def _release_held(self) -> None:
        held = self._held
        while held and self.expected is not None:
            frame = held.pop(self.expected, None)
            if frame is None:
                # Drop repeats below expected; anything above waits for the heal.
                for seq in [s for s in held if s < self.expected]:
                    del held[seq]
                break
            self._deliver(self.expected, frame)

    # --- initialisation and healing -----------------------------------------------------------
    def initialise(self, last_seq: int) -> None:
        self.expected = last_seq + 1
        self._release_held()
        if self._held:
            self._schedule_heal(self.hub.gap_grace)
        self.ready.set()

    def _schedule_heal(self, delay: float, *, catch_up: bool = False) -> None:
        if self._heal_task is None or self._heal_task.done():
            self._heal_task = asyncio.create_task(
                self.heal(delay, catch_up=catch_up), name=f"heal-{self.room_id}"
            )

    async def heal(self, delay: float = 0.0, *, catch_up: bool = False) -> None:
        """Read missing messages from the database until no gap is left.

        With ``catch_up`` (after a bus outage) it also reads past the last message seen."""
        if delay:
            await asyncio.sleep(delay)
        backoff = 0.05
        while self.expected is not None and (self._held or catch_up):
            after = self.expected - 1
            try:
                rows = await self.hub.load_frames(self.room_id, after, HEAL_BATCH)
            except Exception:
                log.warning(
                    "room %s: healing from the database failed", self.room_id, exc_info=True
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.on_messages(rows)
            if len(rows) < HEAL_BATCH:
                if self._held and self.expected == after + 1:
                    # The database has nothing newer yet: the commit is not visible; wait a bit.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if not self._held:
                    break
        self.hub.healed += 1

    def close(self) -> None:
        self._inbox.clear()
        if self._heal_task is not None:
            self._heal_task.cancel()


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
            channel.connections.add(conn)
            try:
                await self.bus.subscribe(channel_name(conn.room_id), channel.on_bus)
                channel.initialise(await self.load_last_seq(conn.room_id))
            except BaseException:
                self._drop_channel(channel)
                channel.ready.set()
                raise
        else:
            channel.connections.add(conn)
            await channel.ready.wait()
            if self._channels.get(conn.room_id) is not channel:
                channel.connections.discard(conn)
                raise Unavailable("the room channel could not be opened")

    def detach(self, conn: Connection) -> None:
        channel = self._channels.get(conn.room_id)
        if channel is None:
            return
        channel.connections.discard(conn)
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

    def deliver_local(self, room_id: str, items: list[tuple[int, str]]) -> None:
        """Messages this instance has just committed, to its own sockets at once, before they
        are published: as Socket.IO's Redis adapter broadcasts locally first, a local socket
        does not wait for the bus to echo the publish back (two more hops, each of which can
        queue behind a fan-out), and does not miss a message while the bus is down. The echo
        that follows is a repeat by ``seq`` and is dropped. An in-process bus delivers on
        publish, so it needs nothing here."""
        if not self.bus.distributed:
            return
        channel = self._channels.get(room_id)
        if channel is not None:
            channel.receive(items)

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
