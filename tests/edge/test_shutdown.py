"""Graceful shutdown of a real `daarion-city serve` process on SIGTERM: it stops accepting,
closes every WebSocket with 1001, ends SSE streams, finishes the requests in flight (every
201 it sent is stored), exits 0, and never writes a token or the JWT secret to its log."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.cluster import SECRET, Instance, token
from tests.support import open_socket
from tests.system.test_cluster import Peer

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    data = tmp_path / "data"
    env = {
        "CITY_DATA_DIR": str(data),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CITY_JWT_SECRET": SECRET,
        "CITY_MESSAGE_RATE": "10000",
        "CITY_MESSAGE_BURST": "10000",
        "LOG_LEVEL": "debug",
    }
    inst = Instance("solo", env, tmp_path)
    inst.start()
    yield inst
    inst.stop()


async def test_sigterm_closes_sockets_with_1001_and_finishes_requests_in_flight(
    instance: Instance, tmp_path: Path
) -> None:
    alice = token("u_alice", "Alice")
    peer = Peer(instance)
    acked: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()
    fifty = asyncio.Event()

    async def poster(n: int) -> None:
        async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                try:
                    r = await client.post(
                        "/city/rooms/general/messages",
                        json={"body": f"p{n}-{i}"},
                        headers={"Authorization": f"Bearer {alice}"},
                    )
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                    # Refused (no longer accepting) or a keep-alive connection closed between
                    # requests: the request was never taken in.
                    await asyncio.sleep(0.05)
                    if instance.proc is not None and instance.proc.poll() is not None:
                        return
                    continue
                if r.status_code == 201:
                    acked.append(r.json()["seq"])
                    if len(acked) >= 50:
                        fifty.set()
                else:
                    failures.append(f"{r.status_code} {r.text}")
                i += 1

    async with (
        open_socket(peer, "/ws/city/rooms/general", token=alice) as room,  # type: ignore[arg-type]
        open_socket(peer, "/ws/city/presence", token=alice) as presence,  # type: ignore[arg-type]
        httpx.AsyncClient(base_url=instance.base_url, timeout=20) as sse,
        sse.stream("GET", "/city/feed/stream") as stream,
    ):
        await room.expect("room.state")
        await presence.expect("presence.bulk_update")
        posters = [asyncio.create_task(poster(n)) for n in range(8)]
        await asyncio.wait_for(fifty.wait(), 20)
        assert instance.proc is not None
        instance.proc.send_signal(signal.SIGTERM)
        assert await room.closed_with(10) == 1001
        assert await presence.closed_with(10) == 1001
        async with asyncio.timeout(10):  # the SSE stream ends instead of holding the shutdown
            async for _ in stream.aiter_raw():
                pass
        exit_code = await asyncio.to_thread(instance.proc.wait, 15)
        stop.set()
        await asyncio.gather(*posters)
    # uvicorn re-raises the signal once it has shut down, so the process ends by SIGTERM (a
    # clean stop to systemd and Kubernetes), after the lifespan shutdown logged below.
    assert exit_code in (0, -signal.SIGTERM)
    assert failures == []
    # Every acknowledged post is stored.
    db = sqlite3.connect(tmp_path / "data" / "city.sqlite3")
    with contextlib.closing(db):
        stored = {
            seq
            for (seq,) in db.execute(
                "SELECT seq FROM city_room_messages WHERE room_id = 'room_city_general'"
            )
        }
    assert set(acked) <= stored
    log = instance.log.read_text()
    assert "closing 2 sockets with 1001" in log
    assert "Application shutdown complete" in log
    assert SECRET not in log
    assert alice not in log
