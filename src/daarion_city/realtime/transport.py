"""The fan-out fast path: one pre-framed message written straight to each socket's transport.

Sending through ASGI costs a frame build and several coroutine layers per socket. For a room
message the hub instead builds the WebSocket frame once (server frames are unmasked, and no
extension is negotiated: permessage-deflate is off) and writes the same bytes to every transport.
Only uvicorn's ``websockets-sansio`` protocol is supported; with any other server (or a socket
whose transport is paused, closing, or has a backlog) delivery falls back to the ASGI path.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from websockets.frames import Frame, Opcode

SCOPE_KEY = "daarion.ws_protocol"


def text_frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def remember_protocol(scope: MutableMapping[str, Any], send: Any) -> None:
    """Called by the outermost middleware, where ``send`` is still the server's own."""
    proto = getattr(send, "__self__", None)
    if type(proto).__name__ == "WebSocketsSansIOProtocol":
        scope[SCOPE_KEY] = proto


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
# bench/RESULTS.md). The scope has its own copy of the request headers.
def release_handshake(scope: MutableMapping[str, Any]) -> None:
    """Drop the server's copy of an accepted socket's handshake."""
    proto = scope.get(SCOPE_KEY)
    if proto is None or not getattr(proto, "handshake_complete", False):
        return
    request = getattr(proto, "request", None)
    if request is not None:
        request.headers.clear()  # websockets' Headers: the parser's reference empties too
        proto.request = None
    proto.response = None
