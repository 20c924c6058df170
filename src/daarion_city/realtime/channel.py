"""One room's sockets on this instance (:class:`RoomChannel`), and the bus envelopes in which the
room's messages and events travel.

A channel delivers its room's messages in ``seq`` order with no gap, as ``realtime/hub.py``
describes: repeats dropped, messages ahead of a gap held until the gap fills or is read from the
database (:meth:`RoomChannel.heal`).

Write coalescing: the messages a channel delivers together reach each socket as one write of
their frames back to back, as Centrifugo and Discord's gateway coalesce writes. Messages from
the bus go to the channel's inbox, which is drained once per event-loop turn: what arrived
while the loop was busy (the messages of one group commit travel as one *batch* envelope, and
others pile up in the bus connection while a fan-out runs) goes out together, along with any
release of held messages or heal. Nothing waits for a batch to fill: a message that arrives
alone is written in the same loop turn, so the number of write syscalls per socket falls only
as the load rises. An ephemeral event drains the inbox first, so it never overtakes a message
that arrived before it.

Envelopes (one bus message each): ``m:seq`` a message, ``b:seq:len,...`` messages of one
commit, ``e:exclude_user`` an event, ``h:seq`` a heal announcement; then a newline and the
frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from daarion_city.realtime.connection import Connection
from daarion_city.realtime.fast import FastList
from daarion_city.realtime.transport import DirectWriter, text_frame

log = logging.getLogger(__name__)

FramesLoader = Callable[[str, int, int], Awaitable[list[tuple[int, str]]]]
"""``(room_id, after_seq, limit) -> [(seq, frame), ...]`` in ``seq`` order, from the database."""
LastSeqLoader = Callable[[str], Awaitable[int]]


class ChannelHost(Protocol):
    """What a channel uses of its hub (:class:`~daarion_city.realtime.hub.RoomHub`)."""

    gap_grace: float
    load_frames: FramesLoader
    delivered: int
    healed: int


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

    def __init__(self, hub: ChannelHost, room_id: str) -> None:
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
        self.fast = FastList()  # realtime/fast.py

    # --- sockets ------------------------------------------------------------------------------
    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.fast.admit(conn)

    def discard(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.fast.remove(conn)

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
        each socket as one buffer; through the channel's fast list when it holds
        (``realtime/fast.py``), else socket by socket."""
        wires = [text_frame(frame.encode()) for _, frame in run]
        joined = wires[0] if len(wires) == 1 else b"".join(wires)
        self.hub.delivered += len(self.connections) * len(run)
        outside = self.fast.write(run[0][0], run[-1][0], joined)
        direct = 0
        for conn in self.connections if outside is None else outside:
            if conn.send_run(run, wires, joined):
                direct += 1
        DirectWriter.writes += direct
        if outside is None:
            self.fast.after_pass(self.connections, direct, run[-1][0])

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
        self.fast.drop()
        self._inbox.clear()
        if self._heal_task is not None:
            self._heal_task.cancel()
