"""Lean Redis connections for the hot paths, read without redis-py's per-message layers.

redis-py's ``PubSub.get_message`` costs a timeout context, a parse call and a dict per message
(11% of the service's time in the many-rooms profile, bench/RESULTS.md issue 26), and its
pipeline and script calls spend more per command than Redis does. Here one ``read`` of the
socket is fed to hiredis (C) and every reply it completes is handed back at once: a burst of
replies costs one await and a few Python operations each.

Only what the hot paths need: connect (TCP or a Unix socket, TLS for ``rediss://``, ``AUTH``);
for the bus's subscriber, ``SUBSCRIBE``/``UNSUBSCRIBE``/``PING`` written without waiting for
their confirmations (Redis answers them in order on the same connection, and the reader skips
them) and ``replies``; for request and reply (the bus's publisher, the rate limit's script
calls), ``RespClient.pipeline``: commands packed by hand, written at once, their replies read
back in order, on one connection opened on use and replaced after an error or a long rest.
Every other Redis call of the city goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

READ_SIZE = 1 << 16
IDLE = 10.0  # seconds a request connection may rest before the next use opens a new one


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
    """One Redis connection: the bus's subscriber (in pub/sub mode), or a ``RespClient``'s."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, target: str | dict[str, Any], *, within: float) -> RespConnection:
        """Connect (in ``within`` seconds), authenticate and select the database as ``target``
        says: a URL, or a redis-py client's connection options (:func:`options_of`)."""
        options: dict[str, Any] = {**parse_url(target)} if isinstance(target, str) else target
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
                        raise RedisConnectionError(f"redis refused the connection: {answer}")
                if db := int(options.get("db") or 0):
                    (answer,) = await conn.pipeline([command(b"SELECT", b"%d" % db)])
                    if isinstance(answer, hiredis.ReplyError):
                        raise RedisConnectionError(f"redis refused database {db}: {answer}")
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


class RespClient:
    """Request and reply on one lean connection, one pipeline at a time (its callers batch:
    ``core/tasks.Batcher``). The connection opens on first use; after an error (its replies
    may be out of step) or ``IDLE`` seconds of rest (a middlebox may have dropped it; redis-py's
    pool checks such a connection with a PING first) the next use opens a new one. Failures
    are redis-py's exceptions: ``TimeoutError`` after ``timeout`` seconds, ``ConnectionError``
    for a connection that failed; an error reply is returned as it is (``hiredis.ReplyError``)."""

    def __init__(self, target: str | dict[str, Any], *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._conn: RespConnection | None = None
        self._used = 0.0

    async def pipeline(self, commands: list[bytes]) -> list[Any]:
        now = asyncio.get_running_loop().time()
        if self._conn is not None and now - self._used > IDLE:
            self.close()
        self._used = now
        try:
            async with asyncio.timeout(self.timeout):
                if self._conn is None:
                    self._conn = await RespConnection.open(self.target, within=self.timeout)
                return await self._conn.pipeline(commands)
        except BaseException as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("redis did not answer in time") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"redis failed: {exc!r}") from exc
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def options_of(client: Any) -> dict[str, Any]:
    """A redis-py client's connection options (its pool's), for a lean connection beside it."""
    pool = client.connection_pool
    return {**pool.connection_kwargs, "connection_class": pool.connection_class}


def refused(reply: Any) -> RedisError | None:
    """An error reply as redis-py's error, else None."""
    return RedisError(f"redis refused: {reply}") if isinstance(reply, hiredis.ReplyError) else None
