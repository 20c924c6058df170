"""Redis pub/sub fan-out for several instances.

One subscriber connection per process (``core/resp.py``: read with hiredis, every message a
read completes handled in one go), read by one owned task, and one publisher connection
(``core/resp.RespClient``), used by one pipeline at a time (its commands packed by hand, its
replies read with hiredis). Redis
pub/sub is at-most-once: while the connection is down, publishes are lost for this subscriber.
When the reader reconnects it re-subscribes every channel and then runs the reconnect
listeners, which heal from the database (room hubs read every message after the last ``seq``
they delivered).

A process's own publications: Redis delivers a payload to every subscriber of its channel, the
publisher included. Here the publisher's own handlers get it during ``publish`` (as the
in-process bus does: at once, and even while Redis is down), and every payload goes out behind
an 8-byte origin tag of this process, by which the reader drops its own copies unparsed; other
processes strip the tag. (All instances of one deployment must therefore run a version that
tags: an instance that does not would misread the others' payloads.)

``publish_many`` calls made while a pipeline is in flight go together in the next one: the
commits of many rooms that complete together publish in one round trip, not one each. Items go
out in the order of the calls, so each caller's order holds; those of a ``joinable`` channel
(the feed's) go as one payload, so the other instances read one message for the feed events of
all those rooms, not one per room.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from daarion_city.core.redisutil import blocking_client
from daarion_city.core.resp import RespClient, RespConnection, publish_command, refused
from daarion_city.core.tasks import Batcher, TaskSet
from daarion_city.pubsub.base import Handler, ReconnectListener

log = logging.getLogger(__name__)

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError)
ORIGIN_SIZE = 8
KEEPALIVE = 10.0  # seconds without a byte from Redis before the reader pings; as long again: lost


class RedisPubSub:
    distributed = True

    def __init__(
        self, url: str, *, prefix: str = "", timeout: float = 2.0, pool_size: int = 64
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        # Publishers wait for a free connection (bounded) rather than fail with "Too many
        # connections" when many publish at once.
        self.client: aioredis.Redis = blocking_client(
            url, pool_size=pool_size, wait=timeout, health_check_interval=10
        )
        self.origin = os.urandom(ORIGIN_SIZE)  # this process's tag on what it publishes
        self._handlers: dict[str, list[Handler]] = {}
        self._names: dict[bytes, str] = {}  # the subscribed channels by their name in Redis
        self._joinable: set[str] = set()
        self._listeners: list[ReconnectListener] = []
        self._sub: RespConnection | None = None
        self._pub = RespClient(url, timeout=timeout)  # the publisher's connection
        self._reader: asyncio.Task[None] | None = None
        self.connected = False
        self._tasks = TaskSet("redis-pubsub")
        self._publishes: Batcher[list[tuple[str, bytes]], None] = Batcher(
            self._send, self._tasks, name="redis-publisher"
        )

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name="redis-pubsub-reader")

    async def stop(self) -> None:
        await self._tasks.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._close_subscriber()
        self._pub.close()
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await self.client.ping())
        except (*_DOWN, RedisError, TimeoutError):
            return False

    async def publish(self, channel: str, data: bytes) -> None:
        self._deliver(channel, data)
        if not self.connected:
            # Known to be down: fail fast; subscribers heal from the database on reconnect.
            raise RedisConnectionError("redis pub/sub is reconnecting")
        await self._publishes.submit([(channel, data)])

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        for channel, data in items:
            self._deliver(channel, data)
        if not self.connected:
            raise RedisConnectionError("redis pub/sub is reconnecting")
        await self._publishes.submit(items)

    async def _send(self, calls: list[list[tuple[str, bytes]]]) -> list[BaseException | None]:
        """One pipeline for the items of every call, in the order of the calls; the items of
        a joinable channel as one ``PUBLISH``, where its first one was."""
        origin, prefix, joinable = self.origin, self.prefix, self._joinable
        out: list[tuple[str, list[bytes]]] = []
        joined: dict[str, list[bytes]] = {}
        for items in calls:
            for channel, data in items:
                if channel not in joinable:
                    out.append((channel, [origin, data]))
                elif (parts := joined.get(channel)) is not None:
                    parts.append(data)
                else:
                    joined[channel] = parts = [origin, data]
                    out.append((channel, parts))
        commands = [publish_command((prefix + ch).encode(), b"".join(p)) for ch, p in out]
        for reply in await self._pub.pipeline(commands):
            if (error := refused(reply)) is not None:
                raise error
        return [None] * len(calls)

    def _deliver(self, channel: str, data: bytes) -> None:
        for handler in tuple(self._handlers.get(channel, ())):
            try:
                handler(data)
            except Exception:
                log.exception("subscriber of %s failed", channel)

    def joinable(self, channel: str) -> None:
        self._joinable.add(channel)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        if len(handlers) == 1:
            wire = (self.prefix + channel).encode()
            self._names[wire] = channel
            if self._sub is not None:  # else the reader subscribes it when it connects
                self._sub.subscribe([wire])

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]
            wire = (self.prefix + channel).encode()
            del self._names[wire]
            if self._sub is not None:
                self._sub.unsubscribe([wire])

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        self._listeners.append(listener)

    def _close_subscriber(self) -> None:
        sub, self._sub = self._sub, None
        self.connected = False
        if sub is not None:
            sub.close()

    async def _connect(self) -> None:
        sub = await RespConnection.open(self.url, within=self.timeout)
        # Nothing awaited from here on: every channel subscribed so far is in this command,
        # and any later one is written by ``subscribe`` itself.
        # A keep-alive channel keeps the connection subscribed (and so readable) when idle.
        sub.subscribe([(self.prefix + "city:__alive__").encode(), *self._names])
        self._sub = sub
        self.connected = True

    def _dispatch(self, replies: list[Any]) -> None:
        """Messages to their handlers; this process's own, confirmations and pongs skipped."""
        origin = self.origin
        for reply in replies:
            if type(reply) is not list or reply[0] != b"message":
                continue  # (p)subscribe confirmations, pongs
            data = reply[2]
            if data[:ORIGIN_SIZE] == origin:
                continue  # published here: its handlers had it during the publish
            channel = self._names.get(reply[1])
            if channel is None:
                continue  # unsubscribed since
            payload = data[ORIGIN_SIZE:]
            for handler in tuple(self._handlers.get(channel, ())):
                try:
                    handler(payload)
                except Exception:
                    log.exception("subscriber of %s failed", channel)

    async def _read_loop(self) -> None:
        backoff = 0.1
        first = True
        pinged = False
        while True:
            try:
                if self._sub is None:
                    await self._connect()
                    if not first:
                        log.info("redis pub/sub reconnected; healing from the database")
                        for listener in list(self._listeners):
                            await listener()
                    first = False
                    backoff = 0.1
                    pinged = False
                sub = self._sub
                assert sub is not None
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        replies = await sub.replies()
                except TimeoutError:
                    if pinged:
                        raise RedisConnectionError("redis did not answer a ping") from None
                    sub.ping()
                    pinged = True
                    continue
                pinged = False
                self._dispatch(replies)
            except asyncio.CancelledError:
                raise
            except (*_DOWN, RedisError) as exc:
                if self.connected or first:
                    log.warning("redis pub/sub lost: %r", exc)
                self._close_subscriber()
                first = False if self._listeners else first
                await asyncio.sleep(backoff)
                # Capped low: a refused connect costs nothing, and every update published
                # between Redis's return and this reconnect is lost to this instance's sockets.
                backoff = min(backoff * 2, 0.5)
