"""Two real instances (two processes, two ports) sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import SECRET, Instance, RedisServer, token
from tests.support import Socket, open_socket

TTL = 2.0
SWEEP = 0.5


@pytest.fixture
def backend() -> str:
    return "postgresql"


@pytest.fixture
def cluster(
    database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[Instance, Instance]]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "CITY_INSTANCES": "2",
        "CITY_JWT_SECRET": SECRET,
        "CITY_DATA_DIR": str(tmp_path / "data"),
        "PRESENCE_TTL": str(TTL),
        "PRESENCE_SWEEP_INTERVAL": str(SWEEP),
        "CITY_MESSAGE_RATE": "1000",
        "CITY_MESSAGE_BURST": "1000",
        "LOG_LEVEL": "warning",
    }
    a = Instance("inst-a", env, tmp_path)
    b = Instance("inst-b", env, tmp_path)
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


class Peer:
    """Enough of a server for `open_socket`."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst

    def ws_url(self, path: str) -> str:
        return self.inst.ws_url(path)


async def post(inst: Instance, tok: str, room: str, body: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10) as client:
        r = await client.post(
            f"/city/rooms/{room}/messages",
            json={"body": body},
            headers={"Authorization": f"Bearer {tok}"},
        )
        assert r.status_code == 201, r.text
        result: dict[str, object] = r.json()
        return result


async def get_json(inst: Instance, path: str) -> Any:
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10) as client:
        return (await client.get(path)).json()


async def collect_seqs(ws: Socket, count: int, timeout: float = 10) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        seqs.append((await ws.expect("room.message", timeout=timeout))["message"]["seq"])
    return seqs


async def test_a_message_posted_on_a_reaches_a_socket_on_b(
    cluster: tuple[Instance, Instance],
) -> None:
    a, b = cluster
    alice, bob = token("u_alice", "Alice"), token("u_bob", "Bob")
    async with open_socket(Peer(b), "/ws/city/rooms/science", token=bob) as on_b:  # type: ignore[arg-type]
        await on_b.expect("room.state")
        sent = [await post(a, alice, "science", f"from A {i}") for i in range(20)]
        assert await collect_seqs(on_b, 20) == [m["seq"] for m in sent] == list(range(1, 21))
        # And back: a socket on A hears what is sent over a socket on B.
        async with open_socket(Peer(a), "/ws/city/rooms/science", token=alice) as on_a:  # type: ignore[arg-type]
            await on_a.expect("room.state")
            joined = await on_b.expect("room.join")
            assert joined["user_id"] == "u_alice"
            await on_b.send({"event": "room.message.send", "body": "from B"})
            frame = await on_a.expect("room.message")
            assert frame["message"]["body"] == "from B"
            assert frame["message"]["seq"] == 21
            room = await get_json(a, "/city/rooms/science")
            assert room["members_online"] == 2  # one socket on each instance


async def test_presence_is_one_truth(cluster: tuple[Instance, Instance]) -> None:
    a, b = cluster
    alice, bob = token("u_alice", "Alice"), token("u_bob", "Bob")
    async with open_socket(Peer(b), "/ws/city/presence", token=bob) as watcher:  # type: ignore[arg-type]
        await watcher.expect("presence.bulk_update")
        async with open_socket(Peer(a), "/ws/city/presence", token=alice) as on_a:  # type: ignore[arg-type]
            await on_a.expect("presence.bulk_update")
            up = await watcher.expect("presence.update", user_id="u_alice")
            assert up["status"] == "online"
            await on_a.send({"event": "presence.heartbeat", "status": "away"})
            assert (await watcher.expect("presence.update", user_id="u_alice"))["status"] == "away"
            listing = await get_json(b, "/city/presence")
            assert {u["user_id"]: u["status"] for u in listing["users"]}["u_alice"] == "away"
        assert (await watcher.expect("presence.update", user_id="u_alice"))["status"] == "offline"


async def test_an_instance_killed_takes_its_users_offline(
    cluster: tuple[Instance, Instance],
) -> None:
    a, b = cluster
    alice, bob = token("u_alice", "Alice"), token("u_bob", "Bob")
    async with (
        open_socket(Peer(b), "/ws/city/presence", token=bob) as watcher,  # type: ignore[arg-type]
        open_socket(Peer(b), "/ws/city/rooms/general", token=bob) as room_b,  # type: ignore[arg-type]
    ):
        await watcher.expect("presence.bulk_update")
        await room_b.expect("room.state")
        on_a = open_socket(Peer(a), "/ws/city/presence", token=alice)  # type: ignore[arg-type]
        room_a = open_socket(Peer(a), "/ws/city/rooms/general", token=alice)  # type: ignore[arg-type]
        pa = await on_a.__aenter__()
        ra = await room_a.__aenter__()
        await pa.expect("presence.bulk_update")
        await ra.expect("room.state")
        await watcher.expect("presence.update", user_id="u_alice", status="online")
        await room_b.expect("room.join", user_id="u_alice")
        a.kill()
        killed = time.monotonic()
        await watcher.expect(
            "presence.update", timeout=TTL + SWEEP + 5, user_id="u_alice", status="offline"
        )
        waited = time.monotonic() - killed
        # Within TTL + sweep interval (and some scheduling slack on a busy machine).
        assert waited <= TTL + SWEEP + 1.5, waited
        await room_b.expect("room.leave", timeout=TTL + SWEEP + 5, user_id="u_alice")
        room = await get_json(b, "/city/rooms/general")
        assert room["members_online"] == 1
        for ctx in (on_a, room_a):
            with contextlib.suppress(Exception):
                await ctx.__aexit__(None, None, None)


async def test_messages_committed_while_redis_is_down_still_arrive(
    cluster: tuple[Instance, Instance], redis_server: RedisServer
) -> None:
    a, b = cluster
    alice, bob = token("u_alice", "Alice"), token("u_bob", "Bob")
    async with open_socket(Peer(b), "/ws/city/rooms/energy", token=bob) as on_b:  # type: ignore[arg-type]
        await on_b.expect("room.state")
        await post(a, alice, "energy", "before")
        assert await collect_seqs(on_b, 1) == [1]
        redis_server.stop()
        during = [await post(a, alice, "energy", f"during {i}") for i in range(5)]
        assert [m["seq"] for m in during] == [2, 3, 4, 5, 6]  # committed and acknowledged
        redis_server.start()
        assert await collect_seqs(on_b, 5, timeout=15) == [2, 3, 4, 5, 6]
        await post(a, alice, "energy", "after")
        assert await collect_seqs(on_b, 1, timeout=10) == [7]
        await on_b.silent(0.5, ignore=("room.join", "room.leave", "presence.update"))
