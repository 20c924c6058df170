"""The fan-out bus.

Guarantees every implementation keeps:
- at-most-once: a published payload reaches each live subscriber of its channel zero or one times
  (Redis drops messages for a subscriber that falls behind or is disconnected);
- per-publisher order on one channel;
- handlers run on the event loop, must not block, and must not raise;
- ``add_reconnect_listener`` callbacks run after the bus recovers from an outage, so subscribers
  can heal what they may have missed (room messages are healed from the database by ``seq``);
- isolation: a payload reaches only the handlers subscribed to its exact channel, and (Redis)
  buses with different prefixes on one server never see each other's channels; a payload
  published to a channel without subscribers is dropped, nothing is kept for later;
- ``unsubscribe`` takes one handler off a channel at once (the others stay); a handler that
  raises is logged and the others still run;
- delivery: to the publishing process's own handlers during ``publish`` itself, once (Redis
  echoes a payload to its publisher too; that copy is dropped); to other processes, in Redis,
  later, by their bus's reader task;
- Redis down: ``publish`` and ``publish_many`` raise (at once while the reader knows the
  connection is lost), after the process's own handlers had the payload; ``subscribe`` and
  ``unsubscribe`` do not raise for a lost connection: they are remembered and applied when the
  reader reconnects (backing off from 0.1 s to at most 0.5 s between tries); it then
  subscribes every channel again and runs the reconnect listeners, in the order they were
  added; ``ping`` answers False. In process nothing is lost, and no listener ever runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from daarion_city.core.provided import Key

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

    def joinable(self, channel: str) -> None:
        """Declare that ``channel``'s payloads concatenate (the channel's format is a sequence
        of records): those published in one round trip may reach other processes' handlers as
        one payload, their concatenation in publish order (Redis: one ``PUBLISH`` for the feed
        events of every room whose batch shares a pipeline). The publisher's own handlers still
        get each payload as it was published."""
        ...

    async def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def unsubscribe(self, channel: str, handler: Handler) -> None: ...

    def add_reconnect_listener(self, listener: ReconnectListener) -> None: ...


BUS: Key[PubSub] = Key("bus")
