"""In-process fan-out for a single instance: publish calls each subscriber's handler directly."""

from __future__ import annotations

import logging

from daarion_city.pubsub.base import Handler, ReconnectListener

log = logging.getLogger(__name__)


class MemoryPubSub:
    distributed = False

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._handlers.clear()

    async def ping(self) -> bool:
        return True

    async def publish(self, channel: str, data: bytes) -> None:
        for handler in tuple(self._handlers.get(channel, ())):
            try:
                handler(data)
            except Exception:
                log.exception("subscriber of %s failed", channel)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        for channel, data in items:
            await self.publish(channel, data)

    def joinable(self, channel: str) -> None:
        return None  # every payload is handed over as it was published

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if handlers is None:
            return
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        # Nothing is ever lost in process, so there is nothing to heal.
        return None
