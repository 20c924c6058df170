"""The bus's connections to Redis, read without redis-py's per-message layers.

redis-py's ``PubSub.get_message`` costs a timeout context, a parse call and a dict per message
(11% of the service's time in the many-rooms profile, bench/RESULTS.md issue 26). Here one
``read`` of the socket is fed to hiredis (C) and every reply it completes is handed back at once:
a burst of bus messages costs one await and a few Python operations each.

Only what the bus needs: connect (TCP or a Unix socket, TLS for ``rediss://``, ``AUTH``);
for the subscriber, ``SUBSCRIBE``/``UNSUBSCRIBE``/``PING`` written without waiting for their
confirmations (Redis answers them in order on the same connection, and the reader skips them)
and ``replies``; for the publisher, ``pipeline``: commands packed by hand, written at once, and
their replies read back in order (redis-py's pipeline spent more per command than Redis did).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError

READ_SIZE = 1 << 16


def command(*args: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def publish_command(channel: bytes, data: bytes) -> bytes:
    """``PUBLISH channel data`` in RESP, in one step (it is packed once per room batch)."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(data),
        data,
    )


class RespConnection:
    """One Redis connection: the bus's subscriber (in pub/sub mode) or its publisher."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, url: str, *, within: float) -> RespConnection:
        """Connect (in ``within`` seconds) and authenticate as the URL says."""
        options: dict[str, Any] = {**parse_url(url)}
        async with asyncio.timeout(within):
            if options.get("path"):
                reader, writer = await asyncio.open_unix_connection(options["path"])
            else:
                tls = (
                    ssl.create_default_context()
                    if options.get("connection_class") is (SSLConnection)
                    else None
                )
                reader, writer = await asyncio.open_connection(
                    options.get("host", "localhost"), int(options.get("port", 6379)), ssl=tls
                )
            conn = cls(reader, writer)
            try:
                if options.get("password"):
                    user = options.get("username")
                    creds = [user.encode()] if user else []
                    conn.write(command(b"AUTH", *creds, str(options["password"]).encode()))
                    (answer,) = await conn.replies()
                    if isinstance(answer, hiredis.ReplyError):
                        raise RedisConnectionError(f"redis refused the subscriber: {answer}")
            except BaseException:
                conn.close()
                raise
        return conn

    def write(self, data: bytes) -> None:
        """Queue a command (never raises: a lost connection shows in ``replies``)."""
        if not self._writer.is_closing():
            self._writer.write(data)

    def subscribe(self, channels: list[bytes]) -> None:
        if channels:
            self.write(command(b"SUBSCRIBE", *channels))

    def unsubscribe(self, channels: list[bytes]) -> None:
        if channels:
            self.write(command(b"UNSUBSCRIBE", *channels))

    def ping(self) -> None:
        self.write(command(b"PING"))

    async def replies(self) -> list[Any]:
        """Every reply complete after the next read of the socket (at least one; a read that
        completes none reads again). A closed connection raises ``ConnectionError``."""
        parser = self._parser
        got: list[Any] = []
        while not got:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise RedisConnectionError("the redis subscriber connection was closed")
            parser.feed(data)
            try:
                while (reply := parser.gets()) is not False:
                    got.append(reply)
            except hiredis.ProtocolError as exc:
                raise RedisConnectionError(f"unreadable reply from redis: {exc}") from exc
        return got

    async def pipeline(self, commands: list[bytes]) -> list[Any]:
        """Send ``commands`` (each packed by :func:`command`) at once and read their replies,
        in order; an error reply is returned as it is (``hiredis.ReplyError``)."""
        self.write(b"".join(commands))
        await self._writer.drain()
        got: list[Any] = []
        while len(got) < len(commands):
            got += await self.replies()
        return got

    def close(self) -> None:
        self._writer.close()
