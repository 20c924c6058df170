"""Durability: nothing acknowledged is lost when the server is killed with ``kill -9``.

Eight clients (four over HTTP, four over the room WebSocket) send 5,000 messages with
``client_msg_id``s to one room of a ``daarion-city serve`` process on PostgreSQL. At a random
point (seeded; the seed is printed, ``DC_FAULT_SEED`` replays it) the process is killed with
SIGKILL and started again on the same port; the clients retry every send not yet acknowledged,
with the same ``client_msg_id``, until it is. The database is then read directly.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tests.cluster import SECRET, Instance, RedisServer, stored_messages, token

TOTAL = 5000
HTTP_CLIENTS = 4
WS_CLIENTS = 4
HTTP_WINDOW = 4  # requests in flight per HTTP client
WS_WINDOW = 16  # sends in flight per socket
ROOM = "durability"


def seed() -> int:
    return int(os.environ.get("DC_FAULT_SEED") or random.SystemRandom().randrange(2**31))


@pytest.fixture
def backend() -> str:
    return "postgresql"


@pytest.fixture
def instance(database_url: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[Instance]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "CITY_JWT_SECRET": SECRET,
        "CITY_DATA_DIR": str(tmp_path / "data"),
        "CITY_MESSAGE_RATE": "100000",
        "CITY_MESSAGE_BURST": "100000",
        "CITY_WS_SEND_QUEUE": "20000",
        "CITY_WS_CONNECT_RATE": "1000",
        "CITY_WS_CONNECT_BURST": "1000",
        "LOG_LEVEL": "warning",
    }
    inst = Instance("durable", env, tmp_path)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


@dataclass
class Ledger:
    """What the clients were told, and how hard they had to try."""

    acks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    replayed: int = 0  # HTTP answers with Idempotent-Replayed: true
    reconnects: int = 0

    def ack(self, user: str, cmid: str, message: dict[str, Any]) -> None:
        assert message["client_msg_id"] == cmid, message
        assert message["author_user_id"] == user, message
        previous = self.acks.setdefault((user, cmid), message)
        assert previous == message, (previous, message)


async def http_client(inst: Instance, user: str, ids: list[str], ledger: Ledger) -> None:
    headers = {"Authorization": f"Bearer {token(user)}"}
    window = asyncio.Semaphore(HTTP_WINDOW)
    limits = httpx.Limits(max_connections=HTTP_WINDOW, max_keepalive_connections=HTTP_WINDOW)
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10, limits=limits) as http:

        async def send(cmid: str) -> None:
            backoff = 0.02
            async with window:
                while True:
                    ledger.attempts[user, cmid] += 1
                    try:
                        r = await http.post(
                            f"/city/rooms/{ROOM}/messages",
                            json={"body": f"{user} says {cmid}", "client_msg_id": cmid},
                            headers=headers,
                        )
                    except httpx.TransportError:  # the server is gone: try again, same id
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 0.5)
                        continue
                    if r.status_code == 201:
                        if r.headers.get("Idempotent-Replayed") == "true":
                            ledger.replayed += 1
                        ledger.ack(user, cmid, r.json())
                        return
                    assert r.status_code == 503, (r.status_code, r.text)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)

        await asyncio.gather(*(send(cmid) for cmid in ids))


async def ws_client(inst: Instance, user: str, ids: list[str], ledger: Ledger) -> None:
    """Keeps up to ``WS_WINDOW`` sends in flight; after a lost socket, reconnects and sends
    again every one not acknowledged (same ``client_msg_id``)."""
    url = inst.ws_url(f"/ws/city/rooms/{ROOM}?token={token(user)}")
    todo = list(ids)  # not acknowledged yet, in order
    backoff = 0.02
    first = True
    while todo:
        if not first:
            ledger.reconnects += 1
        first = False
        try:
            async with connect(url, max_size=None, open_timeout=5, compression=None) as ws:
                in_flight: set[str] = set()
                cursor = 0
                while todo:
                    while len(in_flight) < WS_WINDOW and cursor < len(todo):
                        cmid = todo[cursor]
                        cursor += 1
                        ledger.attempts[user, cmid] += 1
                        in_flight.add(cmid)
                        frame = {"event": "room.message.send", "body": f"{user} says {cmid}"}
                        frame["client_msg_id"] = cmid
                        await ws.send(orjson.dumps(frame).decode())
                    data = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    event = data.get("event")
                    if event == "room.message.ack":
                        cmid = data["client_msg_id"]
                        ledger.ack(user, cmid, data["message"])
                        in_flight.discard(cmid)
                        todo.remove(cmid)
                        cursor -= 1
                        backoff = 0.02
                    elif event == "error" and data.get("client_msg_id") in in_flight:
                        assert data["code"] == "unavailable", data
                        break  # reconnect and send the rest again
                    else:
                        assert event != "error", data
        except (OSError, TimeoutError, WebSocketException):
            pass
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 0.5)


@pytest.mark.timeout(120)
async def test_kill_9_loses_nothing_acknowledged(instance: Instance, database_url: str) -> None:
    rng_seed = seed()
    rng = random.Random(rng_seed)
    kill_at = rng.randint(TOTAL // 10, TOTAL * 8 // 10)  # acknowledged messages before the kill
    print(f"durability: seed {rng_seed} (DC_FAULT_SEED), kill after {kill_at} acks")
    why = f"seed {rng_seed}, kill after {kill_at} acks"

    async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:
        r = await http.post(
            "/city/rooms",
            json={"slug": ROOM, "name": "Durability"},
            headers={"Authorization": f"Bearer {token('u_owner')}"},
        )
        assert r.status_code == 201, r.text
        room_id = r.json()["id"]

    users = [f"u_http{i}" for i in range(HTTP_CLIENTS)] + [f"u_ws{i}" for i in range(WS_CLIENTS)]
    per_user = {u: [f"{u}-{n}" for n in range(i, TOTAL, len(users))] for i, u in enumerate(users)}
    assert sum(map(len, per_user.values())) == TOTAL
    ledger = Ledger()
    started = time.monotonic()
    clients = [
        asyncio.create_task(
            (http_client if u.startswith("u_http") else ws_client)(instance, u, ids, ledger)
        )
        for u, ids in per_user.items()
    ]
    try:
        while len(ledger.acks) < kill_at:
            done = [c for c in clients if c.done()]
            for c in done:
                c.result()  # a client that failed fails the test now
            await asyncio.sleep(0.002)
        instance.kill()
        killed_at = time.monotonic()
        acked_at_kill = dict(ledger.acks)
        pending_at_kill = {k for k in ledger.attempts if k not in acked_at_kill}
        # The server is dead: what the database holds now is everything it committed.
        stored_at_kill = {
            (r["author_user_id"], r["client_msg_id"]): (r["id"], r["seq"])
            for r in await stored_messages(database_url, room_id)
        }
        lost = [k for k, m in acked_at_kill.items() if stored_at_kill.get(k) != (m["id"], m["seq"])]
        assert not lost, f"acknowledged but not stored at the kill ({why}): {lost[:10]}"
        await asyncio.to_thread(instance.start)
        restarted_at = time.monotonic()
        async with asyncio.timeout(60):
            await asyncio.gather(*clients)
    finally:
        for c in clients:
            c.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    finished = time.monotonic()

    rows = await stored_messages(database_url, room_id)
    expected = {(u, cmid) for u, ids in per_user.items() for cmid in ids}
    assert len(rows) == TOTAL, f"{len(rows)} rows ({why})"
    assert [r["seq"] for r in rows] == list(range(1, TOTAL + 1)), f"seq has gaps ({why})"
    stored = {(r["author_user_id"], r["client_msg_id"]): (r["id"], r["seq"]) for r in rows}
    assert set(stored) == expected, why
    assert set(ledger.acks) == expected, why
    wrong = [k for k, m in ledger.acks.items() if stored[k] != (m["id"], m["seq"])]
    assert not wrong, f"acks that differ from the stored rows ({why}): {wrong[:10]}"
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:
        room = (await http.get(f"/city/rooms/{ROOM}")).json()
        assert room["last_message"]["seq"] == TOTAL

    retried = sum(1 for n in ledger.attempts.values() if n > 1)
    committed_unacked = len(set(stored_at_kill) - set(acked_at_kill))
    print(
        f"durability: {TOTAL} messages in {finished - started:.1f}s; killed after "
        f"{len(acked_at_kill)} acks at {killed_at - started:.1f}s with {len(pending_at_kill)} "
        f"sends in flight ({committed_unacked} of them committed, unacknowledged); restart took "
        f"{restarted_at - killed_at:.1f}s; {retried} sends retried, {ledger.replayed} HTTP "
        f"replays, {ledger.reconnects} socket reconnects"
    )
