"""Presence over the WebSocket and HTTP, on the in-process store and on Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daarion_city.core.errors import Unavailable
from tests.conftest import REDIS_URL
from tests.support import Api, open_socket


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the database plays no part here; the presence store does


@pytest.fixture(params=["memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "presence_ttl": 1.0,
        "presence_sweep_interval": 0.2,
        "presence_write_rate": 1000.0,  # the limits have their own tests
        "presence_write_burst": 1000,
        "city_ws_auth_timeout": 1.0,  # a socket without a token: 4401 after 1 s, not 10
    }
    if request.param == "redis":
        values.update(redis_url=REDIS_URL, city_redis_prefix=redis_prefix)
    return values


async def test_bulk_update_then_changes_only(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as a:
        bulk = await a.expect("presence.bulk_update")
        assert [u["user_id"] for u in bulk["users"]] == [alice.user_id]
        assert bulk["users"][0]["status"] == "online"
        assert bulk["connection_id"]
        async with open_socket(api.server, "/ws/city/presence", token=bob.token) as b:
            bulk = await b.expect("presence.bulk_update")
            assert {u["user_id"] for u in bulk["users"]} == {alice.user_id, bob.user_id}
            up = await a.expect("presence.update", user_id=bob.user_id)
            assert up["status"] == "online"
            assert up["name"] == "Bob"
            assert up["last_seen"].endswith("Z")
            await b.send({"event": "presence.heartbeat", "status": "away"})
            assert (await a.expect("presence.update", user_id=bob.user_id))["status"] == "away"
            for _ in range(3):  # heartbeats that change nothing send nothing
                await b.send({"event": "presence.heartbeat", "status": "away"})
            await a.silent(0.4, ignore=())
            await b.send({"event": "presence.heartbeat", "last_active_ago_ms": 0})
            assert (await a.expect("presence.update", user_id=bob.user_id))["status"] == "online"
            await b.send({"event": "presence.heartbeat", "last_active_ago_ms": 300_000})
            assert (await a.expect("presence.update", user_id=bob.user_id))["status"] == "away"
        gone = await a.expect("presence.update", user_id=bob.user_id)
        assert gone["status"] == "offline"  # clean close of the last socket: offline at once


async def test_presence_socket_errors_and_auth(api: Api) -> None:
    alice = await api.guest("Alice")
    async with open_socket(api.server, "/ws/city/presence") as ws:
        assert await ws.closed_with() == 4401
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        for frame, code in (
            ("nope", "invalid_json"),
            ({"event": "presence.heartbeat", "status": "sleeping"}, "invalid_frame"),
            ({"event": "presence.heartbeat", "last_active_ago_ms": -1}, "invalid_frame"),
            ({"event": "room.message.send", "body": "x"}, "unknown_event"),
        ):
            await ws.send(frame)
            err = await ws.expect("error")
            assert err["code"] == code
        await ws.send({"event": "ping"})
        await ws.expect("pong")


async def test_two_tabs_stay_online_until_the_last_closes(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as watcher:
        await watcher.expect("presence.bulk_update")
        async with open_socket(api.server, "/ws/city/presence", token=bob.token) as tab1:
            await tab1.expect("presence.bulk_update")
            await watcher.expect("presence.update", user_id=bob.user_id, status="online")
            async with open_socket(api.server, "/ws/city/presence", token=bob.token) as tab2:
                await tab2.expect("presence.bulk_update")
                await tab2.send({"event": "presence.heartbeat", "status": "away"})
                await watcher.silent(0.3)  # tab1 is still online: online wins
            await watcher.silent(0.3)
        await watcher.expect("presence.update", user_id=bob.user_id, status="offline")


async def test_dropped_socket_goes_offline_after_the_ttl(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as watcher:
        await watcher.expect("presence.bulk_update")
        async with open_socket(api.server, "/ws/city/presence", token=bob.token) as b:
            await b.expect("presence.bulk_update")
            await watcher.expect("presence.update", user_id=bob.user_id, status="online")
            started = asyncio.get_running_loop().time()
            b.ws.transport.abort()
            # No close frame: the user stays until the TTL (1 s) + sweep interval (0.2 s).
            await watcher.expect(
                "presence.update", timeout=5, user_id=bob.user_id, status="offline"
            )
            waited = asyncio.get_running_loop().time() - started
            assert waited >= 0.5


async def test_heartbeats_keep_a_user_online_without_flapping(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with (
        open_socket(api.server, "/ws/city/presence", token=alice.token) as watcher,
        open_socket(api.server, "/ws/city/presence", token=bob.token) as b,
    ):
        await watcher.expect("presence.bulk_update")
        await b.expect("presence.bulk_update")
        await watcher.expect("presence.update", user_id=bob.user_id, status="online")
        for _ in range(8):  # 2 s of heartbeats every 0.25 s with a 1 s TTL: no flap
            await b.send({"event": "presence.heartbeat"})
            await watcher.send({"event": "presence.heartbeat"})
            await asyncio.sleep(0.25)
        await watcher.silent(0.1, ignore=())
        assert (await api.http.get(f"/city/presence/{bob.user_id}")).json()["status"] == "online"


async def test_rapid_heartbeats_are_coalesced_but_changes_are_not(api: Api) -> None:
    resources = api.server.resources
    window = resources.presence.refresh_window  # TTL 1 s: 0.25 s
    coalesced = resources.metrics.presence_coalesced
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with (
        open_socket(api.server, "/ws/city/presence", token=alice.token) as watcher,
        open_socket(api.server, "/ws/city/presence", token=bob.token) as b,
    ):
        await watcher.expect("presence.bulk_update")
        await b.expect("presence.bulk_update")
        await watcher.expect("presence.update", user_id=bob.user_id, status="online")
        before = coalesced._value.get()
        for _ in range(40):  # a script's burst, well inside one window
            await b.send({"event": "presence.heartbeat"})
        await b.send({"event": "ping"})
        await b.expect("pong")
        assert coalesced._value.get() - before >= 30
        # A change of status is never coalesced: it is announced at once.
        await b.send({"event": "presence.heartbeat", "status": "away"})
        await watcher.expect("presence.update", user_id=bob.user_id, status="away", timeout=2)
        # Heartbeats spread over more than the TTL keep Bob present: the store is written once
        # a window however fast he sends.
        for _ in range(12):
            await b.send({"event": "presence.heartbeat", "status": "away"})
            await watcher.send({"event": "presence.heartbeat"})
            await asyncio.sleep(window / 2)
        await watcher.silent(0.1, ignore=())
        assert (await api.http.get(f"/city/presence/{bob.user_id}")).json()["status"] == "away"


async def test_http_presence(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await api.http.get(f"/city/presence/{alice.user_id}")
    assert r.json()["status"] == "offline"
    r = await alice.post("/city/presence/heartbeat", {"status": "away"})
    assert r.status_code == 200
    assert r.json()["status"] == "away"
    assert r.json()["user_id"] == alice.user_id
    r = await alice.post("/city/presence/heartbeat", {})
    assert r.json()["status"] == "online"
    listing = (await api.http.get("/city/presence")).json()
    assert listing["online_count"] == 1
    assert [u["user_id"] for u in listing["users"]] == [alice.user_id]
    r = await alice.post("/city/presence/offline")
    assert r.status_code == 204
    assert (await api.http.get(f"/city/presence/{alice.user_id}")).json()["status"] == "offline"
    assert (await api.http.post("/city/presence/heartbeat", json={})).status_code == 401
    bad = await alice.post("/city/presence/heartbeat", {"status": "asleep"})
    assert bad.status_code == 422


async def test_http_heartbeats_expire_after_the_ttl(api: Api) -> None:
    alice = await api.guest("Alice")
    await alice.post("/city/presence/heartbeat")
    assert (await api.http.get("/city/presence")).json()["online_count"] == 1
    await asyncio.sleep(1.6)
    assert (await api.http.get("/city/presence")).json()["online_count"] == 0


async def test_beacon_offline_with_the_token_in_the_body(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with (
        open_socket(api.server, "/ws/city/presence", token=alice.token) as watcher,
        open_socket(api.server, "/ws/city/presence", token=bob.token) as b,
    ):
        await watcher.expect("presence.bulk_update")
        bulk = await b.expect("presence.bulk_update")
        await watcher.expect("presence.update", user_id=bob.user_id, status="online")
        # navigator.sendBeacon sends text/plain with no Authorization header.
        body = f'{{"token": "{bob.token}", "connection_id": "{bulk["connection_id"]}"}}'
        r = await api.http.post(
            "/city/presence/offline", content=body, headers={"content-type": "text/plain"}
        )
        assert r.status_code == 204
        await watcher.expect("presence.update", user_id=bob.user_id, status="offline")
    r = await api.http.post("/city/presence/offline", content=b'{"token": "forged"}')
    assert r.status_code == 401
    r = await api.http.post("/city/presence/offline", content=b"[1,2")
    assert r.status_code in (401, 422)


async def test_room_sockets_get_presence_of_people_in_the_room(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("general") as room, bob.socket("general") as bob_room:
        await room.expect("room.state")
        state = await bob_room.expect("room.state")
        assert {m["user_id"] for m in state["online_members"]} == {alice.user_id, bob.user_id}
        async with open_socket(api.server, "/ws/city/presence", token=bob.token) as p:
            await p.expect("presence.bulk_update")
            await room.expect("presence.update", user_id=bob.user_id, status="online")
            await p.send({"event": "presence.heartbeat", "status": "away"})
            await room.expect("presence.update", user_id=bob.user_id, status="away")
            detail = (await api.http.get("/city/rooms/general")).json()
            statuses = {m["user_id"]: m["status"] for m in detail["online_members"]}
            assert statuses == {alice.user_id: "online", bob.user_id: "away"}


async def test_a_snapshot_owed_after_a_bus_outage_is_sent_when_the_store_answers(
    api: Api,
) -> None:
    """After the bus comes back, each presence socket is owed a whole ``presence.bulk_update``
    (updates published meanwhile were lost to it). If the store does not answer at that moment
    (Redis still restarting), the snapshot is not dropped: it goes out at a later sweep."""
    alice = await api.guest("Alice")
    presence = api.server.resources.presence
    store = presence.store
    answer = store.get_all_online
    failures = 0

    async def flaky_get_all_online() -> Any:
        nonlocal failures
        if failures < 2:  # the reconnect's own try and the first sweep after it
            failures += 1
            raise Unavailable("redis is unavailable")
        return await answer()

    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        store.get_all_online = flaky_get_all_online  # type: ignore[method-assign]
        try:
            await presence._after_bus_outage()  # what the bus runs once it has reconnected
            bulk = await ws.expect("presence.bulk_update", timeout=3)
        finally:
            store.get_all_online = answer  # type: ignore[method-assign]
        assert failures == 2
        assert [(u["user_id"], u["status"]) for u in bulk["users"]] == [(alice.user_id, "online")]
        await ws.silent(0.6, ignore=("presence.update",))  # owed once, sent once


async def _lose_every_record(api: Api) -> None:
    """What a Redis restart does to the store (it keeps nothing on disk)."""
    import redis.asyncio as aioredis

    from daarion_city.presence.store.memory import MemoryPresenceStore

    store = api.server.resources.presence.store
    if isinstance(store, MemoryPresenceStore):
        store._users.clear()
        return
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        prefix = api.server.settings.city_redis_prefix
        keys = [k async for k in client.scan_iter(match=prefix + "presence:*")]
        assert keys
        await client.delete(*keys)
    finally:
        await client.aclose()


async def test_live_connections_are_written_again_as_soon_as_the_bus_is_back(api: Api) -> None:
    """A store that lost its records while the bus was away (Redis restarted) shows this
    instance's live users again the moment the bus reconnects, not at their next heartbeat
    (an interval later), and the others are told."""
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    presence = api.server.resources.presence
    async with (
        open_socket(api.server, "/ws/city/presence", token=alice.token) as a,
        open_socket(api.server, "/ws/city/presence", token=bob.token) as b,
    ):
        await a.expect("presence.bulk_update")
        await b.expect("presence.bulk_update")
        await _lose_every_record(api)
        assert (await api.http.get("/city/presence")).json()["online_count"] == 0
        await presence._after_bus_outage()  # what the bus runs once it has reconnected
        online = (await api.http.get("/city/presence")).json()
        assert {u["user_id"] for u in online["users"]} == {alice.user_id, bob.user_id}
        bulk = await a.expect("presence.bulk_update", timeout=3)
        assert {u["user_id"] for u in bulk["users"]} == {alice.user_id, bob.user_id}


async def test_a_heartbeat_takes_whole_milliseconds_in_any_json_form(api: Api) -> None:
    """JSON Schema's integer includes 5.0 (schemathesis sends it); true, "5" and 5.5 are not
    milliseconds."""
    alice = await api.guest("Alice")
    r = await alice.post("/city/presence/heartbeat", {"last_active_ago_ms": 113147.0})
    assert r.status_code == 200, r.text
    for value in (True, "5", 5.5, -1.0):
        r = await alice.post("/city/presence/heartbeat", {"last_active_ago_ms": value})
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), value
