"""The fan-out bus.

Guarantees every implementation keeps:
- at-most-once: a published payload reaches each live subscriber of its channel zero or one times
  (Redis drops messages for a subscriber that falls behind or is disconnected);
- per-publisher order on one channel;
- handlers run on the event loop, must not block, and must not raise;
- ``add_reconnect_listener`` callbacks run after the bus recovers from an outage, so subscribers
  can heal what they may have missed (room messages are healed from the database by ``seq``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

Handler = Callable[[bytes], None]
ReconnectListener = Callable[[], Awaitable[None]]


class PubSub(Protocol):
    @property
    def distributed(self) -> bool:
        """True when several processes can share this bus."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> bool: ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """Publish several payloads in order, in one round trip where the bus allows it; all
        or, on a failure, possibly only some of them (the caller heals as for ``publish``)."""
        ...

    async def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def unsubscribe(self, channel: str, handler: Handler) -> None: ...

    def add_reconnect_listener(self, listener: ReconnectListener) -> None: ...
