"""The fan-out fast path: one pre-framed message written straight to each socket's transport.

Sending through ASGI costs a frame build and several coroutine layers per socket. For a room
message the hub instead builds the WebSocket frame once (server frames are unmasked, and no
extension is negotiated: permessage-deflate is off) and writes the same bytes to every transport.
Only uvicorn's ``websockets-sansio`` protocol is supported; with any other server (or a socket
whose transport is paused, closing, or has a backlog) delivery falls back to the ASGI path.

Also here, below the edge that uses them: how the edge hands the server's protocol to the socket
(:func:`remember_protocol`, ``SCOPE_KEY``), what an accepted socket drops of its handshake
(:func:`release_handshake`), and the light queue and flag of the server's protocol class
(``edge/protocol.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

SCOPE_KEY = "daarion.ws_protocol"


def text_frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def remember_protocol(scope: MutableMapping[str, Any], send: Any) -> None:
    """Called by the outermost middleware, where ``send`` is still the server's own."""
    proto = getattr(send, "__self__", None)
    if isinstance(proto, WebSocketsSansIOProtocol):
        scope[SCOPE_KEY] = proto


class CloseWatch:
    """For the server's protocol (``edge/protocol.py``): ``close_sent`` as a property that calls
    ``on_close_sent`` once when it turns true, so a room's list of sockets in the direct state
    (``realtime/channel.py``) learns that a socket has sent its close frame without asking each
    socket's protocol on every message."""

    _close_sent = False
    on_close_sent: Callable[[], None] | None = None

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, value: bool) -> None:
        self._close_sent = value
        hook = self.on_close_sent
        if value and hook is not None:
            self.on_close_sent = None
            hook()


class DirectWriter:
    __slots__ = ("proto",)
    writes = 0  # frames written this way in this process (exported as a metric)

    def __init__(self, proto: Any) -> None:
        self.proto = proto

    @classmethod
    def for_scope(cls, scope: MutableMapping[str, Any]) -> DirectWriter | None:
        proto = scope.get(SCOPE_KEY)
        if proto is None:
            return None
        conn = getattr(proto, "conn", None)
        if conn is None or getattr(conn, "extensions", None):
            return None  # an extension would have to transform the frame
        if not all(hasattr(proto, a) for a in ("transport", "writable", "close_sent")):
            return None
        return cls(proto)

    def write(self, wire: bytes) -> bool:
        """Write now if the transport takes it; False means use the ASGI path instead.
        (``Connection.send_run``, the per-delivery path of room messages, inlines this.)"""
        p = self.proto
        if p.close_sent or not p.writable.is_set() or p.transport.is_closing():
            return False
        p.transport.write(wire)
        DirectWriter.writes += 1
        return True


# What uvicorn's protocol keeps of the opening handshake for as long as the socket lives, and
# never reads once the socket is accepted: the parsed upgrade request (whose headers websockets'
# parser also holds on to) and the 101 response, about 4 KB per socket (tracemalloc,
# bench/RESULTS.md). The scope has its own copy of the request headers, read only before the
# socket is accepted (the Origin check; a browser's cookies make it the larger copy).
def release_handshake(scope: MutableMapping[str, Any]) -> None:
    """Drop the server's copies of an accepted socket's handshake."""
    proto = scope.get(SCOPE_KEY)
    if proto is None or not getattr(proto, "handshake_complete", False):
        return
    request = getattr(proto, "request", None)
    if request is not None:
        request.headers.clear()  # websockets' Headers: the parser's reference empties too
        proto.request = None
    proto.response = None
    scope["headers"].clear()  # Starlette's cached Headers share this list


# --- for the server's WebSocket protocol (edge/protocol.py) -----------------------------------
# uvicorn's protocol keeps an asyncio.Queue for what the client sends and an asyncio.Event for
# the transport's write flow control: five deques (three in the queue, one in each event), each
# with a 64-slot block, about 3.8 KB per socket whether anything waits or not (tracemalloc,
# bench/RESULTS.md). The ASGI receive queue has a single consumer and holds one or two events
# (uvicorn pauses reading after each message until the app takes it), and the flag has at most
# a sender or two waiting: the same semantics with nothing allocated while idle.


class Inbox:
    """A FIFO for one consumer (``asyncio.Queue``'s ``put_nowait``/``get``/``empty``/``qsize``),
    allocating nothing while empty. An event put is never lost: a consumer cancelled after it
    was woken finds the event still in the queue on its next ``get``."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        item = self._items.pop(0)
        if not self._items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Flag:
    """``asyncio.Event`` (``set``/``clear``/``is_set``/``wait``) with no deque until a waiter."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True
