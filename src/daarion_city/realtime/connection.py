"""One live WebSocket: a bounded send queue drained by one writer task.

Delivery guarantees (per connection):
- frames are written in the order they were queued;
- room messages are queued in ``seq`` order, each at most once (``last_seq`` filters repeats);
- while the connection is *catching up* (sending its opening snapshot: ``room.state`` and the
  ``since_seq`` replay, or ``presence.bulk_update``), live frames are held aside and released
  after the snapshot in the order they came, skipping room messages the replay already carried,
  so the client sees the snapshot first, then no gap and no duplicate.

The opening snapshot waits in a queue of its own, written before the live queue, and does not
count against ``max_queue``: it is bounded by what builds it (one ``room.state``, at most
``CITY_RESUME_LIMIT`` replayed messages; one ``presence.bulk_update``), so a resume within the
limit is never closed for it. Live frames count, whether queued or held during catch-up.

Overflow policy: a reader that stops reading lets its queue fill; at ``max_queue`` live frames
the connection is closed with 4408 ("too slow") and its queue dropped. The close frame is written
straight to the transport, even while flow control has paused writing (the peer gets it after
what is already buffered), the socket's handler gets its disconnect at once (the socket leaves
its room, and nothing it sends from then on is handled), and a peer that has not taken the
close frame within ``close_timeout`` seconds has its connection aborted. Other sockets are never
slowed: queueing is ``put_nowait`` and never awaits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from daarion_city.identity.principal import Principal
from daarion_city.realtime.closes import (
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_TOO_SLOW,
    close_bounded,
    close_now,
)
from daarion_city.realtime.transport import DirectWriter

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class Connection:
    """A socket registered with the hub. Owns its writer task."""

    __slots__ = (
        "_closing",
        "_held",
        "_inflight",
        "_queue",
        "_snapshot",
        "_started",
        "_writer",
        "catching_up",
        "close_timeout",
        "direct",
        "fast_out",
        "going_away",
        "id",
        "last_seq",
        "max_queue",
        "on_overflow",
        "room_id",
        "user",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        user: Principal,
        room_id: str,
        *,
        max_queue: int,
        on_overflow: Callable[[Connection], None] | None = None,
        direct: DirectWriter | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.id = next(_ids)
        self.websocket = websocket
        self.user = user
        self.room_id = room_id
        self.max_queue = max_queue
        self.close_timeout = close_timeout
        self.on_overflow = on_overflow
        self.last_seq = 0
        self.catching_up = True
        self.going_away = False  # closed by the server's shutdown, not by its client
        self._held: list[tuple[int | None, str]] = []
        # Exists only while frames wait (room messages take the direct path; the opening
        # snapshot is queued), and an empty deque is a 600-byte block.
        self._queue: deque[str] | None = None
        self._snapshot: deque[str] | None = None  # the opening snapshot, written first
        self._started = False
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.direct = direct
        self._inflight = False
        self.fast_out: Callable[[Connection], None] | None = None  # realtime/fast.py

    # --- queueing (never awaits) ---------------------------------------------------------------
    def send_snapshot(self, frame: str, wire: bytes | None = None) -> None:
        """Queue a frame of the opening snapshot (while catching up): written before anything
        live, not counted against ``max_queue``; straight to the transport given ``wire``."""
        if not self.catching_up:
            self.send(frame)
            return
        if self._closing or (wire is not None and not self._snapshot and self._write_direct(wire)):
            return
        if self._snapshot is None:
            self._snapshot = deque()
        self._snapshot.append(frame)
        self._inflight = True  # frames ahead of the live ones: no direct writes until written

    def send(self, frame: str) -> None:
        """Queue a live frame; on overflow close the connection with 4408."""
        if self.fast_out is not None:
            self.fast_out(self)  # a queued frame: out of the direct state
        if self._closing:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self.max_queue:
            self._overflow()
            return
        queue.append(frame)
        if self._started and (self._writer is None or self._writer.done()):
            self._spawn_writer()

    def send_event(self, frame: str, wire: bytes | None = None) -> None:
        """Send a live frame without ``seq``; held while the connection catches up."""
        if self.catching_up:
            self._hold(None, frame)
        elif not (wire is not None and self._write_direct(wire)):
            self.send(frame)

    def _write_direct(self, wire: bytes) -> bool:
        """Straight to the transport when nothing is queued or in flight (order is kept)."""
        return (
            self.direct is not None
            and not self._queue
            and not self._inflight
            and not self._closing
            and self.direct.write(wire)
        )

    def send_message(self, seq: int, frame: str, wire: bytes | None = None) -> bool:
        """Send a room message in ``seq`` order, at most once. With ``wire`` (the frame already
        built) and nothing queued or in flight, it is written straight to the transport; True
        when it was. (The hub's per-delivery path is :meth:`send_run`.)"""
        if self.catching_up:
            self._hold(seq, frame)
            return False
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        if wire is not None and self._write_direct(wire):
            return True
        self.send(frame)
        return False

    def send_run(self, run: list[tuple[int, str]], wires: list[bytes], joined: bytes) -> bool:
        """Consecutive room messages (``run``, in ``seq`` order, framed as ``wires``; one or
        more): written as one buffer (``joined``) straight to the transport when this socket is
        live, has nothing queued or in flight and is just before the first of them; otherwise
        each goes through :meth:`send_message`. True when the buffer was written.

        The hub's per-socket path for room messages: the direct write is inline (a call costs
        about a microsecond per delivery), counted by the caller; ``realtime/fast.py`` skips it."""
        direct = self.direct
        if (
            direct is not None
            and not self.catching_up
            and self.last_seq == run[0][0] - 1
            and not self._queue
            and not self._inflight
            and not self._closing
        ):
            p = direct.proto
            if not p.close_sent and p.writable.is_set() and not p.transport.is_closing():
                p.transport.write(joined)
                self.last_seq = run[-1][0]
                return True
        for (seq, frame), wire in zip(run, wires, strict=True):
            self.send_message(seq, frame, wire)
        return False

    def _hold(self, seq: int | None, frame: str) -> None:
        self._held.append((seq, frame))
        if len(self._held) > self.max_queue:
            self._overflow()

    def go_live(self, last_seq: int = 0) -> None:
        """End catch-up: the snapshot (and messages up to ``last_seq``) has been queued."""
        self.last_seq = max(self.last_seq, last_seq)
        self.catching_up = False
        held, self._held = self._held, []
        for seq, frame in held:
            if seq is None:
                self.send(frame)
            else:
                self.send_message(seq, frame)

    @property
    def closing(self) -> bool:
        return self._closing

    # --- writer --------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin writing. The writer task exists only while frames wait in the queue, so an
        idle socket (most of them: room messages take the direct path) costs no task."""
        self._started = True
        if self._queue or self._snapshot:
            self._spawn_writer()

    def _spawn_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    async def _write_loop(self) -> None:
        ws = self.websocket
        # While the writer runs, frames are queued or in flight: no direct writes (order).
        self._inflight = True
        try:
            snapshot = self._snapshot
            while snapshot:
                await ws.send_text(snapshot.popleft())
            self._snapshot = None
            while queue := self._queue:
                while queue:
                    await ws.send_text(queue.popleft())
                if self._queue is queue:
                    self._queue = None  # drained: an idle socket keeps no deque (600 bytes)
            self._inflight = False
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            # The peer went away under us; the reader notices and cleans up.
            log.debug("writer of connection %s stopped: %r", self.id, exc)

    def _overflow(self) -> None:
        if self._closing:
            return
        log.warning(
            "closing connection %s of %s: send queue over %s frames",
            self.id,
            self.user.user_id,
            self.max_queue,
        )
        self._queue = self._snapshot = None
        self._held.clear()
        self._closing = True  # out of any fast list already: by send(), or never in one
        if self.on_overflow is not None:
            self.on_overflow(self)
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        ws, reason = self.websocket, "send queue overflow"
        if not close_now(ws, CLOSE_TOO_SLOW, reason, self.close_timeout):
            self._writer = asyncio.create_task(
                close_bounded(ws, CLOSE_TOO_SLOW, reason, self.close_timeout)
            )

    def expel(self, frame: str, reason: str, code: int = CLOSE_FORBIDDEN) -> asyncio.Task[None]:
        """Refused from now on (a ban, a kick, a suspension; an erasure: 4401): ``frame`` (the
        ``error`` that says why), then what is queued (bounded), then close with ``code``."""
        self.send(frame)
        return self._flush_and_close(code, reason)

    def go_away(self) -> asyncio.Task[None]:
        """The server is shutting down: flush what is queued (bounded), then close with 1001."""
        self.going_away = True
        return self._flush_and_close(CLOSE_GOING_AWAY, "server shutting down")

    def _flush_and_close(self, code: int, reason: str) -> asyncio.Task[None]:
        async def run() -> None:
            await self.stop(flush_timeout=1.0)
            await close_bounded(self.websocket, code, reason, self.close_timeout)

        return asyncio.create_task(run(), name=f"ws-close-{code}-{self.id}")

    async def stop(self, flush_timeout: float = 1.0) -> None:
        """Flush what is queued (bounded in time), then stop the writer."""
        self._closing = True
        if self.fast_out is not None:
            self.fast_out(self)
        task = self._writer
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(flush_timeout):
                await asyncio.shield(task)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:
            log.debug("writer of connection %s ended with an error", self.id, exc_info=True)
