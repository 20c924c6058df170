"""Abuse at scale: a thousand malformed frames over fifty sockets beside a healthy one, and
twenty thousand connect/close cycles after which nothing is left behind."""

from __future__ import annotations

import asyncio
import gc
import os
import random
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import Api, Socket, User, open_socket


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# (frame, the error code it must get). Every one leaves the socket open.
MALFORMED: list[tuple[str | bytes, str]] = [
    ("not json at all", "invalid_json"),
    ("{'single': 'quotes'}", "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2, 3]", "invalid_frame"),
    ('"just a string"', "invalid_frame"),
    ("42", "invalid_frame"),
    ("null", "invalid_frame"),
    ('{"no_event": true}', "invalid_frame"),
    ('{"event": 7}', "invalid_frame"),
    ('{"event": "room.explode"}', "unknown_event"),
    ('{"event": "presence.heartbeat"}', "unknown_event"),
    ('{"event": "room.message.send"}', "invalid_frame"),
    ('{"event": "room.message.send", "body": 12}', "invalid_frame"),
    ('{"event": "room.message.send", "body": "   "}', "invalid_frame"),
    ('{"event": "room.message.send", "body": "a\\u0000b"}', "invalid_frame"),
    ('{"event": "room.message.send", "body": "ok", "client_msg_id": 5}', "invalid_frame"),
    (
        '{"event": "room.message.send", "body": "ok", "client_msg_id": "' + "c" * 100 + '"}',
        "invalid_frame",
    ),
    ('{"event": "room.message.send", "body": "' + "x" * 20_000 + '"}', "invalid_frame"),
    ('{"event": "room.typing", "typing": "yes"}', "invalid_frame"),
    ('{"event": "ping", "deep": ' + orjson.dumps(_nested(50)).decode() + "}", "invalid_frame"),
    ("[" * 5000 + "]" * 5000, "invalid_json"),
    (orjson.dumps({"event": "ping", "many": list(range(3000))}).decode(), "invalid_frame"),
    (b"\x00\x01\x02 binary", "invalid_frame"),
    (b'{"event": "ping"}', "invalid_frame"),  # JSON, but in a binary frame
    ('{"event": "room.message.send", "body": "\\ud800"}', "invalid_json"),
]


async def _malformed_socket(user: User, frames: list[tuple[str | bytes, str]]) -> int:
    """Send every frame; each must get its error; then the socket still answers a ping."""
    async with user.socket("general") as ws:
        await ws.expect("room.state")
        for frame, code in frames:
            await ws.send(frame)
            err = await ws.expect("error", timeout=10)
            assert err["code"] == code, (frame[:60], err)
        await ws.send({"event": "ping"})
        await ws.expect("pong", timeout=10)
    return len(frames)


async def _closing_socket(api: Api, user: User, kind: int) -> int:
    if kind == 0:  # a frame before authenticating
        async with open_socket(api.server, "/ws/city/rooms/general") as ws:
            await ws.send({"event": "room.message.send", "body": "sneaky"})
            assert await ws.closed_with(10) == 4401
    else:  # a frame over the 64 KiB limit
        async with user.socket("general") as ws:
            await ws.expect("room.state")
            await ws.send('{"event": "ping", "pad": "' + "p" * 70_000 + '"}')
            assert await ws.closed_with(10) == 1009
    return 1


async def _healthy(user: User, stop: asyncio.Event, ready: asyncio.Event) -> list[float]:
    """Posts all along, from before the fuzz starts (``ready``: its first ack is in) until the
    fuzz is over and it has made at least five round trips; no error, every ack, and how long
    each took. (The fuzz can be over in a tenth of a second on a fast machine.)"""
    loop = asyncio.get_running_loop()
    waits: list[float] = []
    async with user.socket("general") as ws:
        await ws.expect("room.state")
        i = 0
        while not (stop.is_set() and len(waits) >= 5):
            started = loop.time()
            await ws.send(
                {"event": "room.message.send", "body": f"ok {i}", "client_msg_id": f"h{i}"}
            )
            while True:
                got = await ws.recv(10)
                assert got["event"] != "error", got
                if got["event"] == "room.message.ack" and got["client_msg_id"] == f"h{i}":
                    break
            waits.append(loop.time() - started)
            ready.set()
            i += 1
            await asyncio.sleep(0.02)
    return waits


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_thousand_malformed_frames_break_nothing(api: Api) -> None:
    rng = random.Random(8)
    users = [await api.guest(f"fuzzer{i}") for i in range(10)]
    healthy = await api.guest("Healthy")
    stop, ready = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(_healthy(healthy, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    jobs = []
    for i in range(40):
        frames = [rng.choice(MALFORMED) for _ in range(25)]
        jobs.append(_malformed_socket(users[i % len(users)], frames))
    for i in range(10):
        jobs.append(_closing_socket(api, users[i], i % 2))
    sent = sum(await asyncio.gather(*jobs))
    stop.set()
    waits = await watcher
    assert sent == 1010
    assert len(waits) >= 5
    # "No delay": the healthy client's posts were acknowledged as usual (a generous bound,
    # against a stall of the event loop, not a benchmark).
    assert max(waits) < 2.0, max(waits)
    assert (await api.http.get("/healthz")).status_code == 200
    page = (await api.http.get("/city/rooms/general/messages", params={"limit": 200})).json()
    bodies = {m["body"] for m in page["messages"]}
    assert "sneaky" not in bodies
    assert "ok 0" in bodies


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _cycle(url: str, abrupt: bool) -> None:
    async with connect(url, open_timeout=10, compression=None) as ws:
        await asyncio.wait_for(ws.recv(), 10)  # room.state / presence.bulk_update
        if abrupt:
            ws.transport.abort()  # no close frame, just a dropped TCP connection


CYCLES = 20_000


@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(
    "settings_overrides", [{"presence_ttl": 2.0, "presence_sweep_interval": 0.5}]
)
async def test_twenty_thousand_connect_close_cycles_leave_nothing_behind(api: Api) -> None:
    server = api.server
    resources = server.resources
    users = [await api.guest(f"cycler{i}") for i in range(20)]
    urls = [
        server.ws_url(f"/ws/city/rooms/{room}?token={u.token}")
        for u in users
        for room in ("general", "science")
    ] + [server.ws_url(f"/ws/city/presence?token={u.token}") for u in users]

    done = {"ok": 0, "abrupt": 0}

    async def worker(n: int, count: int) -> None:
        rng = random.Random(n)
        for _ in range(count):
            url = urls[(n + rng.randrange(3) * len(users)) % len(urls)]
            abrupt = rng.random() < 0.2
            await _cycle(url, abrupt=abrupt)
            done["ok"] += 1
            done["abrupt"] += abrupt

    # Warm up (imports, pools, caches), then measure from here.
    await asyncio.gather(*(worker(n, 50) for n in range(20)))
    await _settle(resources)
    gc.collect()
    baseline_rss = _rss_bytes()
    baseline_tasks = len(asyncio.all_tasks())

    per_worker = CYCLES // 20
    done.update(ok=0, abrupt=0)
    await asyncio.gather(*(worker(n, per_worker) for n in range(20)))
    assert done["ok"] == CYCLES
    assert 0.15 * CYCLES < done["abrupt"] < 0.25 * CYCLES
    await _settle(resources)
    gc.collect()

    assert resources.hub.connection_count == 0
    assert not resources.presence.sockets
    assert len(resources.rooms.sockets.sockets_per_user) == 0
    assert len(resources.presence.sockets_per_user) == 0
    for room in ("room_city_general", "room_city_science"):
        assert await resources.rooms.occupancy.members(room) == {}
    assert (await resources.presence.reads.online())["online_count"] == 0
    assert len(asyncio.all_tasks()) <= baseline_tasks + 2
    grown = _rss_bytes() - baseline_rss
    print(f"{CYCLES} cycles ({done['abrupt']} abrupt): RSS {grown / 1e6:+.1f} MB")
    assert grown < 20 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB over {CYCLES} cycles"


async def _settle(resources: Any, timeout: float = 30.0) -> None:
    """Until every socket is gone and presence has timed out (TTL 2 s, sweep 0.5 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        online = (await resources.presence.reads.online())["online_count"]
        if resources.hub.connection_count == 0 and not resources.presence.sockets and not online:
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.25)


__all__ = ["Socket"]
