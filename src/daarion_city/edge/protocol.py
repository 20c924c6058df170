"""The server's WebSocket protocol: uvicorn's ``websockets-sansio`` protocol, lighter per socket.

It keeps what the client sends in an :class:`~daarion_city.realtime.transport.Inbox` and its
write flow control in a :class:`~daarion_city.realtime.transport.Flag` (no deque while idle,
about 3.8 KB per socket less, bench/RESULTS.md), and closes a socket the server gives up on
without waiting for the peer to read (:meth:`CityWebSocketProtocol.close_now`, which
``realtime/closes.py`` calls for a reader too slow to keep up and at shutdown). The fan-out
writes straight to its transport (``realtime/transport.DirectWriter``), and learns of its
close frame from ``close_sent`` (``realtime/transport.CloseWatch``).

Its handshake starts from the request head the HTTP protocol parsed (:meth:`open_handshake`,
``edge/head.py``): uvicorn writes the head out again for websockets to parse it a second time,
which cost about a tenth of a join storm's CPU.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request, _token_re, _value_re
from websockets.protocol import CONNECTING, Protocol

from daarion_city.realtime.transport import CloseWatch, Flag, Inbox


class CityWebSocketProtocol(CloseWatch, WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with the light queue and flag above, and a close
    that does not wait for the peer to read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # uvicorn's, passed on
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        self.closing_now = False  # close_now() has run: its timer bounds the rest

    def open_handshake(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """Take the handshake request from its parsed head, as :meth:`data_received` would from
        the head written out: False, having done nothing, when websockets' parser could find
        fault with the head (or logs it), so that the caller hands it the head written out and
        the refusal stays its own."""
        conn = self.conn
        request = parsed_request(method, target, headers)
        if request is None or conn.debug or conn.state is not CONNECTING:
            return False
        conn.parser = Protocol.parse(conn)  # where ServerProtocol.parse goes after a request
        next(conn.parser)
        self.handle_connect(request)
        return True

    def close_now(self, code: int, reason: str, timeout: float) -> None:
        """Close the socket from the server without waiting on flow control.

        uvicorn's own close (ASGI ``websocket.close``) first waits for the transport to be
        writable, which for a peer that stopped reading is never. Here the close frame goes
        straight after what the transport already holds, the app's ``receive`` gets the
        disconnect at once (so its handler ends and the socket leaves its room), and frames the
        peer sends from now on are discarded. The peer then has ``timeout`` seconds to take
        what is buffered (and answer the close); after that the connection is closed if
        everything was written, or aborted if not: a reader that stopped reading cannot keep
        it open."""
        if self.disconnected or not self.handshake_complete or self.initial_response is not None:
            return
        if not self.close_sent and not self.transport.is_closing():
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            if self.read_paused:  # read on, so the peer's answer to the close is seen
                self.read_paused = False
                self.transport.resume_reading()
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(timeout, self._close_or_abort)
        self.closing_now = True

    def shutdown(self) -> None:
        # uvicorn's shutdown would cancel the close_now() timer and close the transport, which
        # waits for a peer that is not reading (holding the server's exit for its graceful
        # timeout): a socket closing that way is left to its timer.
        if self.closing_now and self.close_timer is not None:
            return
        super().shutdown()

    def _close_or_abort(self) -> None:
        self.close_timer = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # the close frame is still ours: the peer is not reading
        else:
            self.transport.close()


def parsed_request(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> Request | None:
    """The websockets request that its parser (``Request.parse``, websockets 17) makes of the
    head uvicorn writes out (``METHOD target HTTP/1.1``, then ``name: value`` lines); None
    where that parser would refuse the head or might (lines near its length cap)."""
    if len(headers) > MAX_NUM_HEADERS or len(method) + len(target) + 11 >= MAX_LINE_LENGTH:
        return None
    if b" " in target or not target.isascii() or not method.isascii():
        return None
    parsed = Headers()
    for name, value in headers:
        if len(name) + len(value) + 4 >= MAX_LINE_LENGTH or not _token_re.fullmatch(name):
            return None
        value = value.strip(b" \t")
        if not _value_re.fullmatch(value):
            return None
        parsed.set_insecure(name.decode("ascii"), value.decode("iso-8859-1"))
    if "Transfer-Encoding" in parsed or not set(parsed.get_all("Content-Length")) <= {"0"}:
        return None
    return Request(target.decode("ascii"), parsed, method.decode("ascii"), "HTTP/1.1")
