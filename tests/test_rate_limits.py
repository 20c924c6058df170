"""Rate limits: token buckets as pure functions of time, and their HTTP/WebSocket answers."""

from __future__ import annotations

from typing import Any

import pytest

from daarion_city.clock import FakeClock
from daarion_city.errors import RateLimited
from daarion_city.ratelimit import MemoryRateLimiter, take
from tests.support import Api


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "city_message_rate": 0.5,
        "city_message_burst": 3,
        "city_room_create_rate": 0.01,
        "city_room_create_burst": 1,
    }


def test_bucket_refills_at_its_rate() -> None:
    bucket, wait = take(None, rate=2.0, burst=2, now=0.0)
    bucket, wait = take(bucket, rate=2.0, burst=2, now=0.0)
    assert wait == 0.0
    bucket, wait = take(bucket, rate=2.0, burst=2, now=0.0)
    assert wait == pytest.approx(0.5)
    bucket, wait = take(bucket, rate=2.0, burst=2, now=0.5)
    assert wait == 0.0
    # Never more than the burst, however long the pause.
    bucket, _ = take(bucket, rate=2.0, burst=2, now=1000.0)
    assert bucket.tokens == pytest.approx(1.0)


async def test_memory_limiter_with_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    for _ in range(3):
        await limiter.hit("k", rate=1.0, burst=3)
    with pytest.raises(RateLimited) as info:
        await limiter.hit("k", rate=1.0, burst=3)
    assert info.value.retry_after == pytest.approx(1.0)
    await limiter.hit("other", rate=1.0, burst=3)  # keys are independent
    clock.advance(1.0)
    await limiter.hit("k", rate=1.0, burst=3)


async def test_http_posts_over_the_limit_get_429(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    for i in range(3):
        await alice.say("science", f"m{i}")
    r = await alice.post("/city/rooms/science/messages", {"body": "one too many"})
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    # Bob has his own bucket.
    await bob.say("science", "hello")
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["body"] for m in page["messages"]] == ["m0", "m1", "m2", "hello"]


async def test_room_creation_is_limited(api: Api) -> None:
    alice = await api.guest("Alice")
    assert (await alice.post("/city/rooms", {"slug": "one", "name": "One"})).status_code == 201
    r = await alice.post("/city/rooms", {"slug": "two", "name": "Two"})
    assert r.status_code == 429


async def test_websocket_sends_over_the_limit_get_an_error_event(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        for i in range(3):
            await ws.send({"event": "room.message.send", "body": f"w{i}", "client_msg_id": f"w{i}"})
            await ws.expect("room.message.ack", client_msg_id=f"w{i}")
        await ws.send({"event": "room.message.send", "body": "w3", "client_msg_id": "w3"})
        err = await ws.expect("error")
        assert err["code"] == "rate_limited"
        assert err["client_msg_id"] == "w3"
        assert err["retry_after"] > 0
        await ws.send({"event": "ping"})
        await ws.expect("pong")
