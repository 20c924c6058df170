"""Public reads under a crowd: answers per second and latency of each read path, beside
``GET /healthz`` in the same run (issue 20).

    ulimit -n 20000; .venv/bin/python -m bench.reads [--clients 50] [--seconds 8] [--rev REV]

It starts one ``daarion-city serve`` (PostgreSQL: a database it creates and drops; Redis: a key
prefix it cleans), pinned to CPU 0, while this load generator runs on CPU 1. It seeds the rooms
with messages (so pages are full) and a few presence sockets, then, path after path, ``--clients``
closed-loop clients (raw HTTP/1.1 keep-alive, no think time) send GETs for ``--seconds``. One
JSON line per path: answers/s (200s only), p50, p99, other statuses, and the ratio to
``/healthz``. ``--rev`` runs the package of another git revision (as ``bench.compare`` does).

``--writes N`` keeps one more client posting N messages a second to ``general`` while every
path is read, so the reads are measured while what they show changes: each post drops the
list, the room's detail and pages and the feed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.cluster import Instance
from websockets.asyncio.client import connect

from bench.common import pct, scratch
from bench.compare import WORKTREE, export, version_env
from bench.loadgen import RawHttp, token

PATHS = [
    "/healthz",
    "/city/rooms",
    "/city/rooms/general",
    "/city/rooms/general/messages?limit=50",
    "/city/feed",
    "/city/presence",
]


async def seed(base: str, messages: int) -> None:
    """Messages in every default room (the newest pages full) and a room of the bench's own."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        auth = {"authorization": f"Bearer {token('u_seed')}"}
        rooms = [r["slug"] for r in (await http.get("/city/rooms")).json()]
        for i in range(messages):
            for slug in rooms:
                body = {"body": f"seed {i} in {slug}", "client_msg_id": f"seed-{slug}-{i}"}
                r = await http.post(f"/city/rooms/{slug}/messages", json=body, headers=auth)
                r.raise_for_status()


async def writer(base: str, rate: float, seconds: float) -> int:
    """Posts to ``general`` at ``rate`` a second for ``seconds``; answers how many were 201."""
    http = RawHttp(base)
    auth = {"authorization": f"Bearer {token('u_writer')}", "content-type": "application/json"}
    started = time.perf_counter()
    done = 0
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            body = json.dumps({"body": f"live {done}"}).encode()
            if await http.post("/city/rooms/general/messages", body, auth) == 201:
                done += 1
            await asyncio.sleep(max(0.0, (done + 1) / rate - elapsed))
    finally:
        await http.close()
    return done


async def crowd(base: str, path: str, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    others: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        http = RawHttp(base)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            status = await http.get(path)
            if status == 200:
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                others[status] = others.get(status, 0) + 1
        await http.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "path": path,
        "clients": clients,
        "answers_per_s": round(len(latencies) / wall),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(pct(latencies, 0.99), 2),
        "other_statuses": others,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--presence", type=int, default=20, help="presence sockets kept open")
    parser.add_argument("--writes", type=float, default=0.0, help="posts/s during the reads")
    parser.add_argument("--rev", default=WORKTREE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        async with scratch("reads") as space:
            env = version_env(space, export(args.rev, tmp), tmp / "data")
            inst = Instance("bench-reads", env, tmp)
            await asyncio.to_thread(inst.start)
            try:
                assert inst.proc is not None
                with contextlib.suppress(OSError):  # one core for the server, one for us
                    os.sched_setaffinity(inst.proc.pid, {0})
                    os.sched_setaffinity(0, {1})
                await seed(inst.base_url, args.messages)
                sockets = [
                    await connect(inst.ws_url(f"/ws/city/presence?token={token(f'u_p{i}')}"))
                    for i in range(args.presence)
                ]
                results = []
                for path in PATHS:
                    reading = crowd(inst.base_url, path, args.clients, args.seconds)
                    if args.writes <= 0:
                        results.append(await reading)
                        continue
                    result, posts = await asyncio.gather(
                        reading, writer(inst.base_url, args.writes, args.seconds)
                    )
                    results.append({**result, "posts_meanwhile": posts})
                healthz = results[0]["answers_per_s"] or 1
                for result in results:
                    result["beside_healthz"] = round(result["answers_per_s"] / healthz, 3)
                    print(json.dumps(result), flush=True)
                for ws in sockets:
                    await ws.close()
            finally:
                await asyncio.to_thread(inst.stop)


if __name__ == "__main__":
    asyncio.run(main())
