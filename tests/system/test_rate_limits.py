"""Rate limits: token buckets as pure functions of time, and their HTTP/WebSocket answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from daarion_city.config import Settings
from daarion_city.core.clock import FakeClock
from daarion_city.core.errors import RateLimited
from daarion_city.ratelimit import MemoryRateLimiter
from daarion_city.ratelimit.base import take
from tests.cluster import free_port
from tests.support import Api, User, open_socket, two_instances


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


async def test_posts_refused_beside_allowed_ones_leave_no_trace(api: Api) -> None:
    """Posts sent at once share commits, and the rate limit is checked while they wait for
    theirs: the refused ones get 429 and store, announce and number nothing; the allowed
    ones get 201 and gapless seqs, and a socket in the room sees exactly them, in order."""
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with bob.socket("science") as ws:
        await ws.expect("room.state")
        sends = [(alice, f"a{i}") for i in range(6)] + [(bob, f"b{i}") for i in range(2)]
        answers = await asyncio.gather(
            *(u.post("/city/rooms/science/messages", {"body": body}) for u, body in sends)
        )
        codes = [r.status_code for r in answers]
        assert sorted(codes) == [201] * 5 + [429] * 3  # alice's burst is 3
        assert all(r.json()["code"] == "rate_limited" for r in answers if r.status_code == 429)
        stored = sorted((r.json() for r in answers if r.status_code == 201), key=lambda m: m["seq"])
        assert [m["seq"] for m in stored] == [1, 2, 3, 4, 5]
        seen = [(await ws.expect("room.message"))["message"] for _ in stored]
        assert [m["id"] for m in seen] == [m["id"] for m in stored]
        await ws.silent(0.3, ignore=("room.join", "room.leave", "typing"))
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in stored]


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


# --- shared through Redis -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_instances_share_a_users_message_bucket(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    from tests.conftest import REDIS_URL, make_settings

    def settings(name: str) -> Settings:
        return make_settings(
            database_url,
            tmp_path / name,
            redis_url=REDIS_URL,
            city_redis_prefix=redis_prefix,
            city_message_rate=0.01,
            city_message_burst=2,
        )

    async with two_instances(settings) as (api_a, api_b):
        alice = await api_a.guest("Alice")
        on_b = User(api_b, alice.user_id, alice.name, alice.token)
        await alice.say("general", "one")
        await on_b.say("general", "two")
        r = await on_b.post("/city/rooms/general/messages", {"body": "three"})
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "rate_limited"
        r = await alice.post("/city/rooms/general/messages", {"body": "three"})
        assert r.status_code == 429, r.text


# --- presence writes, guests, connections, Second Me ------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "presence_write_rate": 0.01,
            "presence_write_burst": 3,
            "city_guest_rate": 0.01,
            "city_guest_burst": 4,
            "city_ws_connect_rate": 0.01,
            "city_ws_connect_burst": 3,
        }
    ],
)
async def test_presence_guest_and_connect_limits(api: Api) -> None:
    alice = await api.guest("Alice")
    for _ in range(3):
        r = await alice.post("/city/presence/heartbeat", {})
        assert r.status_code == 200, r.text
    r = await alice.post("/city/presence/heartbeat", {})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1

    # A socket's heartbeats have their own bucket: the fourth gets an error, the socket lives.
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        for _ in range(3):
            await ws.send({"event": "presence.heartbeat"})
        await ws.send({"event": "presence.heartbeat"})
        err = await ws.expect("error")
        assert err["code"] == "rate_limited"
        await ws.send({"event": "ping"})
        await ws.expect("pong")

    # Sign-ups per address: 4 in a burst (Alice took one).
    for i in range(3):
        await api.guest(f"g{i}")
    r = await api.http.post("/auth/guest", json={"name": "one too many"})
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"

    # Socket upgrades per address: three went through (one above, two here); the next is
    # refused before the upgrade with 429 and Retry-After.
    async with alice.socket("general") as ws:
        await ws.expect("room.state")
        async with alice.socket("general") as ws2:
            await ws2.expect("room.state")
    with pytest.raises(InvalidStatus) as refused:
        async with alice.socket("general"):
            pass
    assert refused.value.response.status_code == 429
    assert int(refused.value.response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "secondme_token_rate": 0.01,
            "secondme_token_burst": 300,
            # A model server that is not there: the ask fails fast, after it was charged.
            "secondme_llm_base_url": f"http://127.0.0.1:{free_port()}/v1",
            "secondme_llm_model": "smollm2",
        }
    ],
)
async def test_second_me_asks_spend_a_token_bucket(api: Api) -> None:
    alice = await api.guest("Alice")
    # Each ask is charged its prompt and the longest answer (SECONDME_MAX_TOKENS = 256)
    # before the model is called: the second ask finds the bucket short.
    r = await alice.post("/secondme/invoke", {"prompt": "x" * 40})
    assert r.status_code in (502, 503), r.text
    r = await alice.post("/secondme/invoke", {"prompt": "hello"})
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) > 1000
