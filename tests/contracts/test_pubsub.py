"""The pub/sub contract (``pubsub/base.py``), on the in-process bus and on the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from daarion_city.pubsub import MemoryPubSub, PubSub, create_pubsub
from daarion_city.pubsub.base import Handler
from daarion_city.pubsub.redis import RedisPubSub
from tests.cluster import RedisServer
from tests.conftest import REDIS_URL
from tests.support import eventually

PROBE = b"?probe"


class Inbox:
    """What handlers received, as ``(channel, payload)`` in arrival order (probes left out)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def on(self, channel: str) -> Handler:
        def handler(data: bytes) -> None:
            if data != PROBE:
                self.got.append((channel, data))

        return handler

    def of(self, channel: str) -> list[bytes]:
        return [data for ch, data in self.got if ch == channel]


async def subscribed(bus: PubSub, channel: str, handler: Handler) -> None:
    """Subscribe, then have another bus publish probes until one arrives: the subscription is
    live in Redis (a bus's own publications reach its handlers without Redis)."""
    seen = asyncio.Event()

    def probe(data: bytes) -> None:
        if data == PROBE:
            seen.set()

    await bus.subscribe(channel, handler)
    await bus.subscribe(channel, probe)
    async with other_bus(bus) as sender:

        async def arrived() -> bool:
            with contextlib.suppress(RedisError):  # a pooled connection from before an outage
                await sender.publish(channel, PROBE)
            await asyncio.sleep(0.01)
            return seen.is_set()

        await eventually(arrived, 5, f"subscription to {channel}")
    await bus.unsubscribe(channel, probe)


@contextlib.asynccontextmanager
async def other_bus(bus: PubSub) -> AsyncIterator[PubSub]:
    """Another instance's bus on the same Redis and prefix (the same bus in process)."""
    if not isinstance(bus, RedisPubSub):
        yield bus
        return
    other = await started(RedisPubSub(bus.url, prefix=bus.prefix, timeout=bus.timeout))
    try:
        yield other
    finally:
        await other.stop()


async def started(bus: PubSub) -> PubSub:
    await bus.start()
    if isinstance(bus, RedisPubSub):
        await eventually(lambda: bus.connected, 5, "the bus connected")
    return bus


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[PubSub]:
    url = "" if request.param == "memory" else REDIS_URL
    bus = await started(create_pubsub(url, redis_prefix))
    try:
        yield bus
    finally:
        await bus.stop()


@pytest.fixture
async def sender(bus: PubSub) -> AsyncIterator[PubSub]:
    """The publisher of a test: another instance's bus (Redis), so what it publishes reaches
    ``bus`` through Redis; in process, ``bus`` itself."""
    async with other_bus(bus) as other:
        yield other


async def test_the_factory_picks_the_backend(bus: PubSub) -> None:
    assert isinstance(bus, RedisPubSub if bus.distributed else MemoryPubSub)
    assert await bus.ping()


async def test_one_publisher_order_holds_on_a_channel(bus: PubSub, sender: PubSub) -> None:
    inbox = Inbox()
    await subscribed(bus, "room:a", inbox.on("room:a"))
    sent = [f"m{i}".encode() for i in range(50)]
    for data in sent:
        await sender.publish("room:a", data)
    await eventually(lambda: len(inbox.got) >= 50, 5, "50 messages")
    assert inbox.of("room:a") == sent


async def test_channels_are_isolated(bus: PubSub, sender: PubSub) -> None:
    inbox = Inbox()
    await subscribed(bus, "room:a", inbox.on("room:a"))
    await subscribed(bus, "room:ab", inbox.on("room:ab"))
    await sender.publish("room:b", b"nobody listens")  # dropped, not kept for a later subscriber
    await sender.publish("room:ab", b"to ab")
    await sender.publish("room:a", b"to a")
    await subscribed(bus, "room:b", inbox.on("room:b"))
    await sender.publish("room:a", b"last")
    await eventually(lambda: b"last" in inbox.of("room:a"), 5, "the last message")
    assert inbox.of("room:a") == [b"to a", b"last"]
    assert inbox.of("room:ab") == [b"to ab"]
    assert inbox.of("room:b") == []


async def test_unsubscribe_takes_one_handler_off(bus: PubSub, sender: PubSub) -> None:
    first, second, marker = Inbox(), Inbox(), Inbox()
    h1, h2 = first.on("a"), second.on("a")
    await subscribed(bus, "a", h1)
    await subscribed(bus, "a", h2)
    await subscribed(bus, "m", marker.on("m"))
    await bus.unsubscribe("a", h1)
    await bus.unsubscribe("a", marker.on("a"))  # never subscribed: nothing happens
    await bus.unsubscribe("nothing", h1)
    await sender.publish("a", b"one")
    await eventually(lambda: second.of("a") == [b"one"], 5, "the handler left on")
    assert first.got == []
    await bus.unsubscribe("a", h2)  # the last one: the channel is dropped
    await sender.publish("a", b"two")
    await sender.publish("m", b"after")  # published after "two": once it is here, so would be "two"
    await eventually(lambda: marker.of("m") == [b"after"], 5, "the marker")
    assert second.of("a") == [b"one"]


async def test_publish_many_keeps_each_callers_order(bus: PubSub, sender: PubSub) -> None:
    inbox = Inbox()
    await subscribed(bus, "a", inbox.on("a"))
    await subscribed(bus, "b", inbox.on("b"))
    await sender.publish_many([("a", b"a1"), ("b", b"b1"), ("a", b"a2")])
    await eventually(lambda: len(inbox.got) == 3, 5, "three messages")
    assert (inbox.of("a"), inbox.of("b")) == ([b"a1", b"a2"], [b"b1"])
    # Calls made together (Redis: while a pipeline is out, they share the next one).
    await asyncio.gather(
        *(sender.publish_many([("a", f"{c}:{i}".encode()) for i in range(10)]) for c in "wxyz")
    )
    await eventually(lambda: len(inbox.of("a")) == 42, 5, "forty more")
    for caller in "wxyz":
        mine = [d for d in inbox.of("a") if d.startswith(caller.encode())]
        assert mine == [f"{caller}:{i}".encode() for i in range(10)]


async def test_a_failing_handler_does_not_stop_the_others(bus: PubSub, sender: PubSub) -> None:
    inbox = Inbox()

    def broken(data: bytes) -> None:
        raise RuntimeError("a handler bug")

    await bus.subscribe("a", broken)
    await subscribed(bus, "a", inbox.on("a"))
    await sender.publish("a", b"x")
    await sender.publish("a", b"y")
    await eventually(lambda: inbox.of("a") == [b"x", b"y"], 5, "both messages")


async def test_buses_share_channels_under_one_prefix_only(redis_prefix: str) -> None:
    """Two instances with one prefix fan out to each other; another prefix sees nothing."""
    buses = [
        await started(RedisPubSub(REDIS_URL, prefix=prefix))
        for prefix in (redis_prefix, redis_prefix, redis_prefix + "other:")
    ]
    try:
        inboxes = [Inbox() for _ in buses]
        for bus, inbox in zip(buses, inboxes, strict=True):
            await subscribed(bus, "a", inbox.on("a"))
        await buses[0].publish("a", b"hello")
        await buses[2].publish("a", b"other")
        await eventually(lambda: all(i.of("a") for i in inboxes), 5, "every bus")
        assert [i.of("a") for i in inboxes] == [[b"hello"], [b"hello"], [b"other"]]
    finally:
        for bus in buses:
            await bus.stop()


async def test_a_subscription_made_while_the_bus_connects_is_kept(redis_prefix: str) -> None:
    """Subscribing right after ``start``, while the reader is still connecting (what a service
    does at start-up), is not lost: the reader subscribes it once connected."""
    for _ in range(5):  # the race's window is one round trip: tried a few times
        await _subscribe_while_connecting(redis_prefix)


async def _subscribe_while_connecting(prefix: str) -> None:
    bus = RedisPubSub(REDIS_URL, prefix=prefix)
    await bus.start()
    inbox = Inbox()
    await asyncio.sleep(0)  # the reader has begun connecting
    await bus.subscribe("early", inbox.on("early"))
    try:
        await eventually(lambda: bus.connected, 5, "the bus connected")

        async with other_bus(bus) as sender:  # through Redis

            async def arrived() -> bool:
                await sender.publish("early", b"hello")
                await asyncio.sleep(0.02)
                return bool(inbox.of("early"))

            await eventually(arrived, 2, "the early subscription")
    finally:
        await bus.stop()


async def test_the_memory_bus_delivers_during_publish() -> None:
    bus = MemoryPubSub()
    inbox = Inbox()
    calls: list[str] = []

    async def listener() -> None:
        calls.append("reconnected")

    bus.add_reconnect_listener(listener)
    await bus.subscribe("a", inbox.on("a"))
    await bus.publish("a", b"x")
    assert inbox.of("a") == [b"x"]
    assert calls == []  # nothing is ever lost in process


async def test_redis_outage_then_resubscribe_and_heal(redis_server: RedisServer) -> None:
    """While Redis is down publishing fails (the publisher's own handlers still get it) and
    subscribing is remembered; once it is back, every channel is subscribed again, then the
    reconnect listeners run, in order."""
    bus = await started(RedisPubSub(redis_server.url, timeout=0.5))
    calls: list[str] = []

    async def first() -> None:
        calls.append("first")

    async def second() -> None:
        calls.append("second")

    bus.add_reconnect_listener(first)
    bus.add_reconnect_listener(second)
    try:
        inbox = Inbox()
        await subscribed(bus, "a", inbox.on("a"))
        redis_server.stop()
        await eventually(lambda: not bus.connected, 5, "the loss noticed")
        assert not await bus.ping()
        with pytest.raises(RedisConnectionError):
            await bus.publish("a", b"lost")
        with pytest.raises(RedisConnectionError):
            await bus.publish_many([("a", b"lost")])
        await bus.subscribe("b", inbox.on("b"))  # while down: no error
        redis_server.start()
        await eventually(lambda: calls == ["first", "second"], 10, "the listeners")
        assert inbox.of("a") == [b"lost", b"lost"]  # its own handlers, during the publish
        await subscribed(bus, "b", lambda data: None)
        async with other_bus(bus) as sender:  # through Redis: "a" was subscribed again
            await sender.publish("a", b"back")
            await sender.publish("b", b"new")
            await eventually(lambda: b"back" in inbox.of("a") and inbox.of("b"), 5, "both")
        assert inbox.of("a") == [b"lost", b"lost", b"back"]
        assert inbox.of("b") == [b"new"]
    finally:
        await bus.stop()


async def test_own_publications_reach_own_handlers_once_and_others_through_redis(
    redis_prefix: str,
) -> None:
    """Redis hands a payload back to its publisher too; the publisher's handlers get each of
    its payloads exactly once, during the publish, and another instance gets each once."""
    mine = await started(RedisPubSub(REDIS_URL, prefix=redis_prefix))
    other = await started(RedisPubSub(REDIS_URL, prefix=redis_prefix))
    try:
        here, there = Inbox(), Inbox()
        await subscribed(mine, "a", here.on("a"))
        await subscribed(other, "a", there.on("a"))
        await mine.publish("a", b"one")
        assert here.of("a") == [b"one"]  # during the publish, before any round trip
        await mine.publish_many([("a", b"two"), ("a", b"three")])
        assert here.of("a") == [b"one", b"two", b"three"]
        # Published by the other instance after the three: once it is here, so would be the
        # three's echoes, had they not been dropped.
        await other.publish("a", b"after")
        await eventually(lambda: b"after" in here.of("a"), 5, "the other's message")
        await eventually(lambda: len(there.of("a")) == 4, 5, "all four at the other")
        assert here.of("a") == [b"one", b"two", b"three", b"after"]
        assert there.of("a") == [b"one", b"two", b"three", b"after"]
    finally:
        await mine.stop()
        await other.stop()


async def test_a_subscriber_reads_a_burst_of_large_payloads(bus: PubSub, sender: PubSub) -> None:
    """Payloads larger than one read of the socket and many in one read come out whole and in
    order (the reader feeds what it reads to the parser and takes every complete reply)."""
    inbox = Inbox()
    await subscribed(bus, "a", inbox.on("a"))
    sent = [bytes([65 + i % 26]) * (1 + i * 7919 % 200_000) for i in range(40)]
    await sender.publish_many([("a", data) for data in sent])
    await eventually(lambda: len(inbox.of("a")) == len(sent), 10, "every payload")
    assert inbox.of("a") == sent


async def test_a_joinable_channels_payloads_may_arrive_joined_in_order(
    bus: PubSub, sender: PubSub
) -> None:
    """Payloads of a joinable channel published together reach another instance as their
    concatenation, in publish order, other channels' payloads untouched; the publisher's own
    handlers get each as it was published."""
    for each in {id(bus): bus, id(sender): sender}.values():
        each.joinable("feed")
    inbox, own = Inbox(), Inbox()
    await subscribed(bus, "feed", inbox.on("feed"))
    await subscribed(bus, "room", inbox.on("room"))
    await sender.subscribe("feed", own.on("feed"))
    await asyncio.gather(
        sender.publish_many([("room", b"r1"), ("feed", b"1\n")]),
        sender.publish_many([("room", b"r2"), ("feed", b"2\n3\n")]),
        sender.publish_many([("feed", b"4\n")]),
    )
    assert own.of("feed")[-3:] == [b"1\n", b"2\n3\n", b"4\n"]
    await eventually(lambda: b"".join(inbox.of("feed")) == b"1\n2\n3\n4\n", 5, "the feed")
    assert inbox.of("room") == [b"r1", b"r2"]
    if bus.distributed:  # the three calls were queued before their pipeline went: one PUBLISH
        assert inbox.of("feed") == [b"1\n2\n3\n4\n"]
