"""The request head's limits: uvicorn's httptools protocol with caps on the request line and
headers, which uvicorn does not have for httptools (h11's ``h11_max_incomplete_event_size`` does
not apply to it, and its keep-alive timeout only covers the idle time between requests).

- Size, ``CITY_MAX_HEADER_BYTES`` (16 KiB, Node's default): the bytes of the request line and
  headers. A head still unfinished when its bytes reach the cap is refused then: the parser never
  holds more of it than the cap. (A head that starts in the middle of a read, behind a pipelined
  request, is held to the cap by its headers' sizes, counted as they are parsed.)
- Count, ``CITY_MAX_HEADERS`` (100): the headers of one request.
- Time, ``CITY_HEADER_TIMEOUT`` (10 s): for the first request of a connection from its opening,
  for the next ones from their first byte. Time in which the server itself is not reading (flow
  control) does not count.

Past the size or the count the answer is 431 ``headers_too_large``, past the time 408
``request_timeout``, then the connection ends. When the answer to an earlier request of the
connection is still being written, a 431 waits for it to complete (the connection is no longer
read meanwhile, for at most the head timeout) and a 408 just closes the connection.
After an answer the server shuts its writing side and discards what the client still sends for
up to ``LINGER`` seconds before it closes (nginx's lingering close): closing with unread bytes
resets the connection, and the client could lose the answer.

Cost per request: a count and a sum in ``on_header`` and a clock read at a request's first byte;
one timer per connection at a time, armed again only after it lapsed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from daarion_city.edge.cork import HeadCork
from daarion_city.edge.protocol import CityWebSocketProtocol

log = logging.getLogger(__name__)
LINGER = 2.0


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int = 16 * 1024
    max_headers: int = 100
    timeout: float = 10.0


class _HeadRefused(Exception):
    """Raised from a parser callback: stops the parsing of a head over the caps."""


def refusal(
    status: int, code: str, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """An answer written by the protocol itself: ``{"detail", "code"}``, then the end."""
    body = orjson.dumps({"detail": detail, "code": code})
    parts = [STATUS_LINE[status]]
    for name, value in default_headers:  # the security headers (edge/server.py), as everywhere
        parts += [name, b": ", value, b"\r\n"]
    parts += [
        b"content-type: application/json\r\ncontent-length: ",
        str(len(body)).encode(),
        b"\r\nconnection: close\r\n\r\n",
        body,
    ]
    return b"".join(parts)


class CityHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # uvicorn's, passed on
        super().__init__(*args, **kwargs)
        self._max_bytes = self.limits.max_bytes
        self._max_headers = self.limits.max_headers
        self._head_room = self._max_bytes  # bytes the unfinished head may still take
        self._head_pending = True  # the head of the current (or next) request is unfinished
        self._head_waiting = True  # a head has begun (or the connection is new) and is awaited
        self._head_deadline = 0.0
        self._heads = 0  # heads completed on this connection
        self._size = 0  # of the current head's headers, as parsed
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._refusal = ""

    # --- the connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline = self.loop.time() + self.limits.timeout
        self._timer = self.loop.call_later(self.limits.timeout, self._check_head_time)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's (0.54), but the socket's protocol takes the head as parsed here, not
        written out again for websockets to parse (``CityWebSocketProtocol.open_handshake``)."""
        self._cancel_timer()  # the socket's protocol takes the transport over
        ws_class = self.ws_protocol_class
        if not (isinstance(ws_class, type) and issubclass(ws_class, CityWebSocketProtocol)):
            super().handle_websocket_upgrade()
            return
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sUpgrading to WebSocket", prefix)
        self.connections.discard(self)
        method, headers = self.scope["method"].encode(), self.headers  # the scope's
        protocol = ws_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        if not protocol.open_handshake(method, self.url, headers):
            output = [method, b" ", self.url, b" HTTP/1.1\r\n"]
            for name, value in headers:
                output += [name, b": ", value, b"\r\n"]
            output.append(b"\r\n")
            protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is discarded
        if self._head_pending:
            if len(data) > self._head_room:
                self._feed_to_cap(data)
                return
            self._head_room -= len(data)
        self._feed(data)

    def _feed_to_cap(self, data: bytes | memoryview) -> None:
        """This read would take the unfinished head past the cap: parse up to the cap, and the
        rest only if the head ended within it (views of the read, not copies)."""
        room, heads = self._head_room, self._heads
        self._head_room = 0
        data = memoryview(data)
        self._feed(data[:room])
        transport = self.transport
        if self._refused or transport.is_closing() or transport.get_protocol() is not self:
            return  # refused, invalid, or upgraded to a WebSocket
        if self._heads == heads:
            self._refuse(431, "headers_too_large", self._too_large())
            return
        self.data_received(data[room:])

    def _feed(self, data: bytes | memoryview) -> None:
        """uvicorn's ``data_received`` (0.54), with the refusal of a head over the caps."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal:
                self._refuse(431, "headers_too_large", self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # --- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._size = self._count = 0
        if not self._head_waiting:  # the first byte of a keep-alive connection's next request
            self._head_waiting = True
            self._head_deadline = self.loop.time() + self.limits.timeout
            if self._timer is None:
                self._timer = self.loop.call_later(self.limits.timeout, self._check_head_time)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        self._size += len(name) + len(value) + 4  # ": " and CRLF
        if self._count > self._max_headers:
            self._refusal = f"more than {self._max_headers} request headers"
            raise _HeadRefused
        if self._size > self._max_bytes:
            self._refusal = self._too_large()
            raise _HeadRefused
        # uvicorn's on_header (0.54), inlined: this runs for every header of every request.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_pending = self._head_waiting = False
        self._heads += 1
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # uvicorn's new cycle
            cycle.transport = HeadCork(self.transport, cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True  # what comes next is the next request's head
        self._head_room = self._max_bytes

    # --- time and refusals ------------------------------------------------------------------
    def _check_head_time(self) -> None:
        self._timer = None
        if not self._head_waiting or self._refused or self.transport.is_closing():
            return  # the next request's first byte arms the timer again
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: not the client's time
            self._head_deadline = now + self.limits.timeout
        if now < self._head_deadline:
            self._timer = self.loop.call_later(self._head_deadline - now, self._check_head_time)
            return
        detail = f"the request line and headers did not arrive within {self.limits.timeout:g} s"
        self._refuse(408, "request_timeout", detail)

    def _too_large(self) -> str:
        return f"the request line and headers are over {self._max_bytes} bytes"

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._refused = True
        self._cancel_timer()
        log.info("refused a request from %s: %s", self.client, detail, extra={"status": status})
        answer = refusal(status, code, detail, self.server_state.default_headers)
        if self.cycle is None or self.cycle.response_complete:
            self._answer_and_end(answer)
        elif status == 431:  # behind a pipelined request: answered once that one is
            cycle = self.cycle  # the last request read; those before it are answered first
            answered = cycle.on_response

            def then_refuse() -> None:
                answered()
                self._answer_deferred(answer)

            cycle.on_response = then_refuse
            self.flow.pause_reading()
            self._timer = self.loop.call_later(self.limits.timeout, self.transport.close)
        else:
            self.transport.close()  # too slow, and an earlier answer is still being written

    def _answer_deferred(self, answer: bytes) -> None:
        if not self.transport.is_closing():  # the answer in flight may have closed it
            self._unset_keepalive_if_required()
            self._cancel_timer()
            self._answer_and_end(answer)

    def _answer_and_end(self, answer: bytes) -> None:
        transport = self.transport
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the client reads the answer, then the end of the connection
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER, transport.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(limits: HeadLimits) -> type[CityHttpProtocol]:
    """The protocol class a server built with these limits uses (uvicorn's ``http`` option)."""

    class LimitedHttpProtocol(CityHttpProtocol):
        pass

    LimitedHttpProtocol.limits = limits
    return LimitedHttpProtocol
