"""Presence benchmark: heartbeats per second on one instance, and the time a status change takes
to reach a presence socket on another instance.

    .venv/bin/python -m bench.presence [--sockets 200] [--seconds 10] [--changes 200]

It starts its own instances (`daarion-city serve` processes) on PostgreSQL (a database it creates
and drops) and Redis (a key prefix it cleans), and prints one JSON line per scenario:

- ``heartbeats``: S presence sockets each send heartbeats that change nothing, as fast as the
  server takes them, for the given seconds; a ``ping`` after each batch of 50 marks when the
  server has handled them (frames on one socket are handled in order). The baseline, in the same
  run, is the same sockets sending only ``ping`` frames (no presence work).
- ``propagation``: a user on instance A flips between online and away; a watcher's presence socket
  on instance B times each ``presence.update`` from the flip. The baseline is a watcher on A
  (no cross-instance hop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import orjson
import redis.asyncio as aioredis
from tests.cluster import Instance
from websockets.asyncio.client import ClientConnection, connect

from bench.common import REDIS, SECRET, UNLIMITED, pct, scratch

HB = orjson.dumps({"event": "presence.heartbeat"}).decode()
PING = orjson.dumps({"event": "ping"}).decode()


def token(user_id: str) -> str:
    claims = {"sub": user_id, "name": user_id, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, "HS256")


@contextlib.asynccontextmanager
async def cluster(workdir: Path, count: int) -> AsyncIterator[list[Instance]]:
    async with scratch("presence") as space:
        env = {
            "DATABASE_URL": space.database_url,
            "REDIS_URL": REDIS,
            "CITY_REDIS_PREFIX": space.redis_prefix,
            "CITY_INSTANCES": str(count),
            "CITY_JWT_SECRET": SECRET,
            "CITY_DATA_DIR": str(workdir),
            "CITY_WS_SEND_QUEUE": "100000",
            "CITY_WS_MAX_PER_USER": "100000",
            "LOG_LEVEL": "warning",
            **UNLIMITED,
        }
        instances = [Instance(f"bench-{i}", env, workdir) for i in range(count)]
        try:
            for inst in instances:
                await asyncio.to_thread(inst.start)
            yield instances
        finally:
            for inst in instances:
                await asyncio.to_thread(inst.stop)


async def open_presence(inst: Instance, user_id: str) -> ClientConnection:
    ws = await connect(
        inst.ws_url(f"/ws/city/presence?token={token(user_id)}"), max_size=None, compression=None
    )
    while orjson.loads(await ws.recv())["event"] != "presence.bulk_update":
        pass
    return ws


ERRORS: dict[str, int] = {}


async def drain_until_pong(ws: ClientConnection) -> None:
    while True:
        frame = orjson.loads(await ws.recv())
        if frame["event"] == "pong":
            return
        if frame["event"] == "error":
            ERRORS[frame["code"]] = ERRORS.get(frame["code"], 0) + 1


async def pump(sockets: list[ClientConnection], frame: str, seconds: float) -> int:
    """Each socket sends batches of 50 frames then a ping and waits for its pong."""
    deadline = time.perf_counter() + seconds
    counts = [0] * len(sockets)

    pongs = 51 if frame == PING else 1  # every ping in the batch is answered

    async def one(i: int, ws: ClientConnection) -> None:
        while time.perf_counter() < deadline:
            for _ in range(50):
                await ws.send(frame)
            await ws.send(PING)
            for _ in range(pongs):
                await drain_until_pong(ws)
            counts[i] += 50

    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    return sum(counts)


async def script_calls() -> int:
    """EVALSHA calls so far on the Redis server: proof the heartbeats reached the store."""
    client = aioredis.Redis.from_url(REDIS)
    stats = await client.info("commandstats")
    await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def server_cpu(inst: Instance) -> float:
    """CPU seconds (user + system) the instance's process has used so far."""
    assert inst.proc is not None
    fields = Path(f"/proc/{inst.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def heartbeats(inst: Instance, sockets: int, seconds: float) -> dict[str, object]:
    conns = [await open_presence(inst, f"u_hb_{i}") for i in range(sockets)]
    for ws in conns:  # the joins of the later sockets are announced to the earlier ones
        await ws.send(PING)
        await drain_until_pong(ws)
    start, cpu = time.perf_counter(), server_cpu(inst)
    base = await pump(conns, PING, seconds)
    base_rate = base / (time.perf_counter() - start)
    base_cpu = (server_cpu(inst) - cpu) / base
    before = await script_calls()
    start, cpu = time.perf_counter(), server_cpu(inst)
    done = await pump(conns, HB, seconds)
    rate = done / (time.perf_counter() - start)
    hb_cpu = (server_cpu(inst) - cpu) / done
    store_calls = await script_calls() - before
    for ws in conns:
        await ws.close()
    return {
        "scenario": "heartbeats",
        "sockets": sockets,
        "heartbeats_per_s": round(rate),
        "baseline_pings_per_s": round(base_rate),
        "ratio": round(rate / base_rate, 3),
        # The server's CPU per frame (each batch of 50 also carries one ping): what the
        # service spends, whatever the load generator on the same cores manages to send.
        "server_cpu_us_per_heartbeat": round(hb_cpu * 1e6, 2),
        "server_cpu_us_per_ping": round(base_cpu * 1e6, 2),
        "errors": ERRORS,
        "redis_script_calls_per_heartbeat": round(store_calls / max(done, 1), 3),
    }


async def propagation(a: Instance, b: Instance, changes: int) -> dict[str, object]:
    flipper = await open_presence(a, "u_flip")
    remote = await open_presence(b, "u_watch_b")
    local = await open_presence(a, "u_watch_a")
    lat: dict[str, list[float]] = {"remote": [], "local": []}

    async def watch(ws: ClientConnection, key: str, pending: dict[str, float]) -> None:
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame.get("event") == "presence.update" and frame["user_id"] == "u_flip":
                sent = pending.get(frame["status"])
                if sent is not None:
                    lat[key].append((time.perf_counter() - sent) * 1000)

    pending: dict[str, float] = {}
    tasks = [
        asyncio.create_task(watch(remote, "remote", pending)),
        asyncio.create_task(watch(local, "local", pending)),
    ]
    await asyncio.sleep(0.5)
    for i in range(changes):
        status = "away" if i % 2 == 0 else "online"
        pending[status] = time.perf_counter()
        await flipper.send(orjson.dumps({"event": "presence.heartbeat", "status": status}).decode())
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    for t in tasks:
        t.cancel()
    for ws in (flipper, remote, local):
        await ws.close()
    remote_ms, local_ms = lat["remote"], lat["local"]
    return {
        "scenario": "propagation",
        "changes": changes,
        "received_remote": len(remote_ms),
        "remote_p50_ms": round(statistics.median(remote_ms), 2),
        "remote_p99_ms": round(pct(remote_ms, 0.99), 2),
        "baseline_local_p50_ms": round(statistics.median(local_ms), 2),
        "baseline_local_p99_ms": round(pct(local_ms, 0.99), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(os.environ.get("BENCH_WORKDIR", "bench/out"))
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with cluster(workdir, 2) as (a, b):
        print(json.dumps(await heartbeats(a, args.sockets, args.seconds)), flush=True)
        print(json.dumps(await propagation(a, b, args.changes)), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
