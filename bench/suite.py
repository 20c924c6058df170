"""The whole benchmark suite in one run: the service (PostgreSQL + Redis, one instance) beside the
raw baseline, then the scenarios of bench/loadgen.py; the JSON lines go to bench/out/suite.jsonl
and a summary table to stdout (paste it into bench/RESULTS.md).

    ulimit -n 20000; .venv/bin/python -m bench.suite [--quick]

fanout: rates step up (baseline and service interleaved at each step) until delivery drops below
1.0 or p99 goes over 50 ms; the highest rate that kept both is reported for each target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.cluster import Instance, free_port, wait_for

from bench.common import REDIS, SECRET, UNLIMITED, Scratch, scratch

OUT = Path("bench/out")


def loadgen(*args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "CITY_JWT_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen {args} failed: {out.stderr[-2000:]}")
    with (OUT / "suite.jsonl").open("a") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    return lines


def start_baseline() -> tuple[subprocess.Popen[bytes], int, int]:
    ws, pub = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baseline", "--port", str(ws), "--publish-port", str(pub)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        try:
            return httpx.post(f"http://127.0.0.1:{pub}/publish/warm", json={}).status_code == 201
        except httpx.HTTPError:
            return False

    wait_for(ready, 20, "baseline")
    return proc, ws, pub


def fanout_step(
    target: str, ws: str, http: str, pid: int, rate: int, subs: int, seconds: float
) -> dict[str, Any]:
    (line,) = loadgen(
        "fanout",
        "--target",
        target,
        "--ws",
        ws,
        "--http",
        http,
        "--subscribers",
        str(subs),
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--pid",
        str(pid),
    )
    print(json.dumps(line), flush=True)
    return line


def passed(line: dict[str, Any]) -> bool:
    return bool(line["delivery_ratio"] == 1.0 and line["latency_p99_ms"] <= 50)


async def fill_room(db_url: str, room: str, count: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        stamp = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO city_rooms (id, slug, name, description, is_default, created_at, "
            "last_seq, member_count) VALUES ($1, $2, $2, '', false, now(), $3, 0)",
            f"room_city_{room}",
            room,
            count,
        )
        rows = (
            (
                f"m_big_{i}",
                f"room_city_{room}",
                i,
                "u_filler",
                None,
                "filler",
                f"m {i}",
                None,
                stamp,
            )
            for i in range(1, count + 1)
        )
        await conn.copy_records_to_table(
            "city_room_messages",
            records=rows,
            columns=[
                "id",
                "room_id",
                "seq",
                "author_user_id",
                "author_agent_id",
                "username",
                "body",
                "client_msg_id",
                "created_at",
            ],
        )
        # What an operator (or autovacuum, soon after) does after a bulk load: the visibility
        # map, hint bits and statistics, so reads measure the steady state, not a first touch.
        await conn.execute("VACUUM (ANALYZE) city_room_messages")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    parser.add_argument("--only", default="fanout,post,idle,history", help="scenarios to run")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    await asyncio.to_thread(OUT.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread((OUT / "suite.jsonl").unlink, missing_ok=True)
    subs = 200 if args.quick else 1000
    ladder = [25, 50] if args.quick else [25, 50, 75, 100, 125, 150, 175, 200, 250, 300]
    picked = [int(r) for r in os.environ.get("BENCH_RATES", "").split(",") if r]
    rates = picked or ladder  # BENCH_RATES=25 runs one step
    seconds = 3.0 if args.quick else 5.0
    # 20,000 is the open-file limit per process here, and the server needs a few more fds than
    # sockets: 19,000 is the most one instance can hold.
    idle_sockets = 1000 if args.quick else 19000
    history_rows = 10_000 if args.quick else 1_000_000

    async with scratch("suite") as space:
        summary = await run_suite(args, space, subs, rates, seconds, idle_sockets, history_rows)
    print(json.dumps({"summary": summary}, indent=2), flush=True)


async def run_suite(
    args: argparse.Namespace,
    space: Scratch,
    subs: int,
    rates: list[int],
    seconds: float,
    idle_sockets: int,
    history_rows: int,
) -> dict[str, Any]:
    db_url = space.database_url
    service = Instance(
        "bench-suite",
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS,
            "CITY_REDIS_PREFIX": space.redis_prefix,
            "CITY_JWT_SECRET": SECRET,
            "CITY_DATA_DIR": str(OUT),
            "LOG_LEVEL": "warning",
            **UNLIMITED,
            "CITY_WS_SEND_QUEUE": "100000",
            "DATABASE_POOL_SIZE": "20",
        },
        OUT,
    )
    baseline, bws, bpub = await asyncio.to_thread(start_baseline)
    summary: dict[str, Any] = {}
    try:
        await asyncio.to_thread(service.start)
        spid = service.proc.pid if service.proc else 0
        sws, shttp = f"ws://127.0.0.1:{service.port}", service.base_url
        only = set(args.only.split(","))
        if "fanout" in only:
            await fanout_pair(
                summary, baseline.pid, bws, bpub, sws, shttp, spid, rates, subs, seconds
            )
        if "post" in only:
            await post_run(summary, shttp, spid, seconds)
        if "idle" in only:
            await idle_run(summary, sws, shttp, spid, idle_sockets)
        if "history" in only:
            await fill_room(db_url, "big", history_rows)
            (hist,) = await asyncio.to_thread(loadgen, "history", "--http", shttp, "--room", "big")
            print(json.dumps(hist), flush=True)
            summary["history"] = hist
    finally:
        await asyncio.to_thread(service.stop)
        baseline.terminate()
    return summary


async def fanout_pair(
    summary: dict[str, Any],
    bpid: int,
    bws: int,
    bpub: int,
    sws: str,
    shttp: str,
    spid: int,
    rates: list[int],
    subs: int,
    seconds: float,
) -> None:
    """Both ladders interleaved, baseline then service at each rate, so that the machine's
    drift over the run (it is shared and noisy) falls on both alike. A target leaves the ladder
    at its first step that fails; the best passing step of each is reported."""
    targets = {
        "baseline": (f"ws://127.0.0.1:{bws}", f"http://127.0.0.1:{bpub}", bpid),
        "service": (sws, shttp, spid),
    }
    best: dict[str, dict[str, Any] | None] = dict.fromkeys(targets)
    climbing = set(targets)
    for rate in rates:
        for target, (ws, http, pid) in targets.items():
            if target not in climbing:
                continue
            line = await asyncio.to_thread(fanout_step, target, ws, http, pid, rate, subs, seconds)
            if passed(line):
                best[target] = line
            else:
                climbing.discard(target)
        if not climbing:
            break
    summary["fanout"] = best


def start_floor() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 20, "floor")
    return proc, port


async def post_run(summary: dict[str, Any], shttp: str, spid: int, seconds: float) -> None:
    """Posts against the framework floor (bench/floor.py: the same stack, storing nothing),
    then against the service, in one run."""
    floor, fport = await asyncio.to_thread(start_floor)
    try:
        args = ["post", "--clients", "50", "--seconds", str(seconds * 2), "--room", "science"]
        (bare,) = await asyncio.to_thread(
            loadgen, *args, "--http", f"http://127.0.0.1:{fport}", "--pid", str(floor.pid)
        )
        bare["target"] = "floor"
        print(json.dumps(bare), flush=True)
    finally:
        floor.terminate()
    (post,) = await asyncio.to_thread(loadgen, *args, "--http", shttp, "--pid", str(spid))
    post["target"] = "service"
    print(json.dumps(post), flush=True)
    summary["post"] = {"floor": bare, "service": post}


async def idle_run(summary: dict[str, Any], sws: str, shttp: str, spid: int, n: int) -> None:
    (idle,) = await asyncio.to_thread(
        loadgen,
        "idle",
        "--ws",
        sws,
        "--http",
        shttp,
        "--sockets",
        str(n),
        "--pid",
        str(spid),
    )
    print(json.dumps(idle), flush=True)
    summary["idle"] = idle


if __name__ == "__main__":
    asyncio.run(main())
