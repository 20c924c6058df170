"""The webhooks' HTTP client: POSTs to one URL over one kept-alive HTTP/1.1 connection (TLS
for ``https``, verified against the system's CAs), each answer parsed by httptools (the
server's own parser, in C). httpx cost the sender about 0.6 ms of CPU per POST in the server's
event loop, six times this (bench/RESULTS.md, "Issue 25: webhooks"), and the sender shares
that loop with the posts."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools


class HookError(Exception):
    """The answer could not be read (the connection closed early, or it was not HTTP)."""


class _Exchange(asyncio.Protocol):
    """One connection: a request at a time, its answer's status and whether to keep it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.status: int | None = None  # the answer's, once its head is read
        self.closed = False

    # asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HookError(f"not an HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status is not None and self.answer is not None and not self.answer.done():
            self.answer.set_result(self.status)  # a body that ends with the connection
        self._fail(ConnectionResetError("the connection closed before the answer"))

    # httptools
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive():
            self.close()

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    async def exchange(self, request: bytes) -> int:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.status = None
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HookClient:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL")
        self.host = parts.hostname
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        head = [
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "User-Agent: daarion-city-webhooks",
            "Content-Type: application/json",
        ]
        if parts.username is not None:  # https://user:password@host/: basic authentication
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head.append(f"Authorization: Basic {base64.b64encode(pair.encode()).decode()}")
        self._head = "".join(line + "\r\n" for line in head).encode()
        self._conn: _Exchange | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the answer's status. Raises OSError (refused, reset), HookError; the
        caller bounds the time. A kept connection the server closed meanwhile is replaced
        once, at once."""
        request = b"".join(
            (
                self._head,
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode(),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                return await self._exchange(conn, request)
            except ConnectionError:
                pass  # closed by the server while idle, most likely: once more, on a new one
        return await self._exchange(await self._connect(), request)

    async def _exchange(self, conn: _Exchange, request: bytes) -> int:
        try:
            return await conn.exchange(request)
        except BaseException:  # an answer half read leaves the connection unusable
            conn.close()
            raise

    async def _connect(self) -> _Exchange:
        self.close()
        loop = asyncio.get_running_loop()
        name = self.host if self.tls else None
        _, conn = await loop.create_connection(
            _Exchange, self.host, self.port, ssl=self.tls, server_hostname=name
        )
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
