"""Redis pub/sub fan-out for several instances.

One subscriber connection per process, read by one owned task. Redis pub/sub is at-most-once:
while the connection is down, publishes are lost for this subscriber. When the reader reconnects
it re-subscribes every channel and then runs the reconnect listeners, which heal from the database
(room hubs read every message after the last ``seq`` they delivered).

``publish_many`` calls made while a pipeline is in flight go together in the next one: the
commits of many rooms that complete together publish in one round trip, not one each. Items go
out in the order of the calls, so each caller's order holds.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from daarion_city.core.redisutil import blocking_client
from daarion_city.core.tasks import Batcher, TaskSet
from daarion_city.pubsub.base import Handler, ReconnectListener

log = logging.getLogger(__name__)

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ConnectionError)


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
        self._handlers: dict[str, list[Handler]] = {}
        self._listeners: list[ReconnectListener] = []
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
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
        if self._pubsub is not None:
            await self._close_pubsub()
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await self.client.ping())
        except (*_DOWN, RedisError, TimeoutError):
            return False

    async def publish(self, channel: str, data: bytes) -> None:
        if not self.connected:
            # Known to be down: fail fast; subscribers heal from the database on reconnect.
            raise RedisConnectionError("redis pub/sub is reconnecting")
        await self.client.publish(self.prefix + channel, data)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        if not self.connected:
            raise RedisConnectionError("redis pub/sub is reconnecting")
        await self._publishes.submit(items)

    async def _send(self, calls: list[list[tuple[str, bytes]]]) -> list[BaseException | None]:
        """One pipeline for the items of every call, in the order of the calls."""
        async with self.client.pipeline(transaction=False) as pipe:
            for items in calls:
                for channel, data in items:
                    pipe.publish(self.prefix + channel, data)
            await pipe.execute()
        return [None] * len(calls)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        if len(handlers) == 1 and self._pubsub is not None and self.connected:
            try:
                await self._pubsub.subscribe(self.prefix + channel)
            except _DOWN:
                # The reader re-subscribes every channel when it reconnects.
                log.warning("subscribing %s failed; will retry on reconnect", channel)
        self._wake.set()

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]
            if self._pubsub is not None and self.connected:
                try:
                    await self._pubsub.unsubscribe(self.prefix + channel)
                except _DOWN:
                    log.debug("unsubscribe of %s failed while redis is down", channel)

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        self._listeners.append(listener)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self.connected = False
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (*_DOWN, RedisError):
                log.debug("closing the redis subscriber failed", exc_info=True)

    async def _connect(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        channels = [self.prefix + c for c in self._handlers]
        # A keep-alive channel keeps the connection subscribed (and so readable) when idle.
        await pubsub.subscribe(self.prefix + "city:__alive__", *channels)
        self._pubsub = pubsub
        self.connected = True
        # A channel subscribed while the connection was being made (its subscribe saw no
        # connection yet, and the list above was taken before it) is subscribed now.
        late = [self.prefix + c for c in self._handlers if self.prefix + c not in channels]
        if late:
            await pubsub.subscribe(*late)

    async def _read_loop(self) -> None:
        backoff = 0.1
        first = True
        while True:
            try:
                if self._pubsub is None:
                    await self._connect()
                    if not first:
                        log.info("redis pub/sub reconnected; healing from the database")
                        for listener in list(self._listeners):
                            await listener()
                    first = False
                    backoff = 0.1
                assert self._pubsub is not None
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"].decode()[len(self.prefix) :]
                data = message["data"]
                for handler in tuple(self._handlers.get(channel, ())):
                    try:
                        handler(data)
                    except Exception:
                        log.exception("subscriber of %s failed", channel)
            except asyncio.CancelledError:
                raise
            except (*_DOWN, RedisError) as exc:
                if self.connected or first:
                    log.warning("redis pub/sub lost: %r", exc)
                await self._close_pubsub()
                first = False if self._listeners else first
                await asyncio.sleep(backoff)
                # Capped low: a refused connect costs nothing, and every update published
                # between Redis's return and this reconnect is lost to this instance's sockets.
                backoff = min(backoff * 2, 0.5)
