"""Issue 26: a join storm into one room, then fan-out to everyone who came.

    ulimit -n 20000
    flock /tmp/bench.lock .venv/bin/python -m bench.storm --subscribers 10000 --rates 5,10,20
    flock /tmp/bench.lock .venv/bin/python -m bench.storm --subscribers 10000 --rates 1,1 --baseline

One `daarion-city serve` (PostgreSQL + Redis, this checkout's ``src``, ``CITY_LARGE_ROOM`` at its
default 200). Each rate step is a round of ``bench.loadgen fanout``: ``--subscribers`` sockets of
distinct users open into ``general`` from ``--procs`` processes (the raw frame-counting
clients), every one waiting for its ``room.state``; then the posts go out at the step's rate for
``--seconds``. Meanwhile this process asks ``GET /healthz`` every 20 ms on a kept-alive
connection: its p99 over the storm (from the first socket dialled to the last ``room.state``
read) is what a load balancer's health check would see. Reported per step: the storm's length,
healthz p50/p99/max during it, and the fan-out's delivery ratio, deliveries/s and p99 latency
(publish -> deliver, sampled on every 50th socket). Between steps the room empties
(``members_online`` back to 0) before the next storm. With ``--baseline`` each step is run
against the raw broadcast server of ``bench/baseline.py`` first (the same load generator, no
health check): what this machine allows a server that stores and checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.cluster import Instance

from bench.common import REDIS, SECRET, UNLIMITED, pct, scratch
from bench.loadgen import RawHttp, cpu_seconds
from bench.suite import OUT, loadgen, start_baseline

SRC = str(Path("src").resolve())  # this checkout's package, for the service


async def probe(
    base: str | None, pid: int, stop: asyncio.Event, samples: list[tuple[float, float, float]]
) -> None:
    """``GET /healthz`` every 20 ms: ``(when, ms, the server's CPU seconds so far)``; a failed
    probe counts as 10 s. Without ``base`` (the raw baseline has no health check) only the CPU
    is sampled (``ms`` NaN)."""
    http = RawHttp(base) if base is not None else None
    try:
        while not stop.is_set():
            began = time.time()
            ms = float("nan")
            if http is not None and base is not None:
                try:
                    status = await asyncio.wait_for(http.get("/healthz"), 10)
                    ms = (time.time() - began) * 1000 if status == 200 else 10_000.0
                except (OSError, TimeoutError, asyncio.IncompleteReadError):
                    await http.close()
                    http = RawHttp(base)
                    ms = 10_000.0
            samples.append((began, ms, cpu_seconds(pid)))
            await asyncio.sleep(0.02)
    finally:
        if http is not None:
            await http.close()


async def emptied(base: str, within: float = 120.0) -> int:
    """Wait until nobody is online in ``general`` (the previous step's sockets closed)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        deadline = time.monotonic() + within
        while True:
            online = int((await http.get("/city/rooms/general")).json()["members_online"])
            if online == 0 or time.monotonic() > deadline:
                return online
            await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Target:
    """A server the storm is run against: the service, or the raw baseline (``health`` None)."""

    name: str
    ws: str
    http: str
    pid: int
    health: str | None


async def step(target: Target, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    samples: list[tuple[float, float, float]] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(target.health, target.pid, stop, samples))
    try:
        (line,) = await asyncio.to_thread(
            loadgen,
            "fanout",
            "--target",
            "service" if target.health is not None else "baseline",
            "--ws",
            target.ws,
            "--http",
            target.http,
            "--subscribers",
            str(args.subscribers),
            "--procs",
            str(args.procs),
            "--dialing",
            str(args.dialing),
            "--rate",
            str(rate),
            "--seconds",
            str(args.seconds),
            "--pid",
            str(target.pid),
        )
    finally:
        stop.set()
        await prober
    began, ended = line["storm_began"], line["storm_began"] + line["storm_s"]
    window = [(ms, cpu) for when, ms, cpu in samples if began <= when <= ended]
    during = [ms for ms, _ in window if ms == ms]  # NaN: not asked (the baseline)
    cpu = window[-1][1] - window[0][1] if len(window) > 1 else float("nan")
    return {
        "target": target.name,
        "rate": rate,
        "subscribers": args.subscribers,
        "dialing": args.procs * args.dialing,
        "storm_s": line["storm_s"],
        "sockets_refused": line["sockets_refused"],
        "healthz_probes": len(during),
        "healthz_p50_ms": round(statistics.median(during), 1) if during else None,
        "healthz_p99_ms": round(pct(during, 0.99), 1) if during else None,
        "healthz_max_ms": round(max(during), 1) if during else None,
        # the server's CPU during the storm: per socket, and its share of one core
        "storm_cpu_ms_per_socket": round(cpu * 1000 / args.subscribers, 2),
        "storm_cpu_share": round(cpu / line["storm_s"], 2),
        "machine_load": round(os.getloadavg()[0], 1),
        "delivery_ratio": line["delivery_ratio"],
        "deliveries_per_s": line["deliveries_per_s"],
        "latency_p50_ms": line["latency_p50_ms"],
        "latency_p99_ms": line["latency_p99_ms"],
        "cpu_us_per_delivery": line["cpu_us_per_delivery"],
        "posts_ok": line["posts_ok"],
    }


async def run_step(target: Target, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """One storm and its posts; then the room empties before the next storm."""
    try:
        result = await step(target, rate, args)
    except RuntimeError as exc:  # the load generator failed: said, not hidden
        result = {"target": target.name, "rate": rate, "error": str(exc)[-500:]}
    if target.health is not None:
        result["left_online"] = await emptied(target.health)
        result["env"] = args.env
    else:
        await asyncio.sleep(3)  # the baseline forgets a socket as it closes
    print(json.dumps(result), flush=True)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=4, help="load generator processes")
    parser.add_argument(
        "--dialing",
        type=int,
        default=25,
        help="sockets each load generator process has between dial and room.state, at most",
    )
    parser.add_argument("--rates", default="5,10,15,20", help="posts per second, one step each")
    parser.add_argument("--seconds", type=float, default=5.0, help="of posts per step")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the service (repeatable), e.g. CITY_GC_INTERVAL=0",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="each step against the raw broadcast baseline (bench/baseline.py) first, same run",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    async with scratch("storm") as space:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "CITY_JWT_SECRET": SECRET,
                "LOG_LEVEL": "error",
                **UNLIMITED,
                "DATABASE_URL": space.database_url,
                "REDIS_URL": REDIS,
                "CITY_REDIS_PREFIX": space.redis_prefix,
                "DATABASE_POOL_SIZE": "20",
                "PYTHONPATH": SRC,
                "CITY_DATA_DIR": tmp,
                **dict(pair.split("=", 1) for pair in args.env),
            }
            service = Instance("bench-storm", env, OUT)
            await asyncio.to_thread(service.start)
            assert service.proc is not None
            targets = [
                Target(
                    "service",
                    service.ws_url("").rstrip("/"),
                    service.base_url,
                    service.proc.pid,
                    service.base_url,
                )
            ]
            baseline = None
            if args.baseline:
                baseline, bws, bpub = await asyncio.to_thread(start_baseline)
                targets.insert(
                    0,
                    Target(
                        "baseline",
                        f"ws://127.0.0.1:{bws}",
                        f"http://127.0.0.1:{bpub}",
                        baseline.pid,
                        None,
                    ),
                )
            try:
                for rate in (int(r) for r in args.rates.split(",")):
                    for target in targets:
                        results.append(await run_step(target, rate, args))
            finally:
                await asyncio.to_thread(service.stop)
                if baseline is not None:
                    baseline.terminate()
                    baseline.wait(10)
    with (OUT / "storm.jsonl").open("a") as fh:
        for result in results:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
