"""Sockets per user are capped (presence and room sockets, one mechanism), and a user's presence
socket heartbeats share one bucket (on the in-process presence store and on Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import REDIS_URL
from tests.support import Api, Socket, User, open_socket

CAP = 3


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the database plays no part here; the presence store does


@pytest.fixture(params=["memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "presence_max_sockets_per_user": CAP,
        "city_ws_max_per_user": CAP,
        "presence_write_rate": 0.01,  # no refill to speak of while the test runs
        "presence_write_burst": 4,
    }
    if request.param == "redis":
        values.update(redis_url=REDIS_URL, city_redis_prefix=redis_prefix)
    return values


async def until_pong(ws: Socket) -> list[dict[str, Any]]:
    """Every frame before the next ``pong``: the server has handled what was sent before."""
    await ws.send({"event": "ping"})
    frames = []
    while (frame := await ws.recv(timeout=30)).get("event") != "pong":
        frames.append(frame)
    return frames


async def refused(api: Api, user: User, path: str = "/ws/city/presence") -> int | None:
    """Open one more socket: the close code it gets, None when it was let in."""
    async with open_socket(api.server, path, token=user.token) as ws:
        try:
            frame = await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        assert frame["event"] in ("presence.bulk_update", "room.state")
        return None


async def test_presence_sockets_per_user_are_capped(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    path = "/ws/city/presence"
    async with (
        open_socket(api.server, path, token=alice.token) as s1,
        open_socket(api.server, path, token=alice.token) as s2,
    ):
        async with open_socket(api.server, path, token=alice.token) as s3:
            for ws in (s1, s2, s3):
                await ws.expect("presence.bulk_update")
            assert await refused(api, alice) == 4429
            # Another user is not affected, and the first ones stay open and work.
            assert await refused(api, bob) is None
            for ws in (s1, s2, s3):
                await ws.send({"event": "presence.heartbeat"})
                assert [f for f in await until_pong(ws) if f["event"] == "error"] == []
        # Closing one frees a slot (its release may trail the close handshake a little, so a
        # client retrying a few times, as after any 4429, gets in).
        for _ in range(50):
            if (code := await refused(api, alice)) != 4429:
                break
            await asyncio.sleep(0.1)
        assert code is None
        status = (await api.http.get(f"/city/presence/{alice.user_id}")).json()["status"]
        assert status == "online"


async def test_a_users_socket_heartbeats_share_one_bucket(api: Api) -> None:
    alice = await api.guest("Alice")
    path = "/ws/city/presence"
    async with (
        open_socket(api.server, path, token=alice.token) as s1,
        open_socket(api.server, path, token=alice.token) as s2,
        open_socket(api.server, path, token=alice.token) as s3,
    ):
        for ws in (s1, s2, s3):
            await ws.expect("presence.bulk_update")
        # The burst is 4 for the user, whichever sockets the heartbeats come from.
        for ws in (s1, s2, s1, s2):
            await ws.send({"event": "presence.heartbeat"})
            assert [f for f in await until_pong(ws) if f["event"] == "error"] == []
        await s3.send({"event": "presence.heartbeat"})
        errors = [f for f in await until_pong(s3) if f["event"] == "error"]
        assert [e["code"] for e in errors] == ["rate_limited"]
        assert errors[0]["retry_after"] > 0
        await s1.send({"event": "presence.heartbeat", "status": "away"})
        assert [f["code"] for f in await until_pong(s1) if f["event"] == "error"] == [
            "rate_limited"
        ]


async def test_room_sockets_per_user_are_capped(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("general") as r1, alice.socket("science") as r2:
        async with alice.socket("general") as r3:
            for ws in (r1, r2, r3):
                await ws.expect("room.state")
            assert await refused(api, alice, "/ws/city/rooms/welcome") == 4429
            # Presence sockets are counted apart.
            assert await refused(api, alice) is None
        for _ in range(50):
            if (code := await refused(api, alice, "/ws/city/rooms/welcome")) != 4429:
                break
            await asyncio.sleep(0.1)
        assert code is None
