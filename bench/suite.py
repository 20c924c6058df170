"""The whole benchmark suite in one run: the service (PostgreSQL + Redis, one instance) beside the
raw baseline, then the scenarios of bench/loadgen.py; the JSON lines go to bench/out/suite.jsonl
and a summary table to stdout (paste it into bench/RESULTS.md).

    ulimit -n 20000; .venv/bin/python -m bench.suite [--quick]

fanout (one room of 1,000) and rooms (50 rooms of 20): rates step up (baseline and service
interleaved at each step) until delivery drops below
1.0 or p99 goes over 50 ms; the highest rate that kept both is reported for each target. A step
that fails is run once more before the target leaves the ladder: on this shared machine one
stall of a few hundred milliseconds fails a step that passes on the next try, for either target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
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


ROOMS = 50  # the rooms scenario: the same sockets in rooms of SUBS / ROOMS


def fanout_step(
    target: str,
    ws: str,
    http: str,
    pid: int,
    rate: int,
    subs: int,
    seconds: float,
    scenario: str = "fanout",
    label: str | None = None,
) -> dict[str, Any]:
    """One step; ``label`` names the target in the printed line (default ``target``)."""
    (line,) = loadgen(
        scenario,
        "--rooms",
        str(ROOMS),
        "--room",
        "bench" if scenario == "rooms" else "general",
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
        "--publishers",  # posts in flight at most (BENCH_PUBLISHERS, 200 by default)
        os.environ.get("BENCH_PUBLISHERS", "200"),
    )
    line["target"] = label or target
    print(json.dumps(line), flush=True)
    return line


def passed(line: dict[str, Any]) -> bool:
    return bool(line["delivery_ratio"] == 1.0 and line["latency_p99_ms"] <= 50)


MESSAGE_COLUMNS = [
    "id",
    "room_id",
    "seq",
    "author_user_id",
    "author_agent_id",
    "username",
    "body",
    "client_msg_id",
    "created_at",
]


def filler_rows(room: str, count: int, stamp: object) -> Iterator[tuple[object, ...]]:
    """``count`` messages of the big room, in the order of ``MESSAGE_COLUMNS``."""
    for i in range(1, count + 1):
        yield (
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


def fill_room_sqlite(path: Path, room: str, count: int) -> None:
    """The same room as :func:`fill_room`, in the service's SQLite file (WAL: the service keeps
    running beside this writer)."""
    stamp = datetime.now(UTC).isoformat(sep=" ")
    with sqlite3.connect(path, timeout=60) as db:
        db.execute(
            "INSERT INTO city_rooms (id, slug, name, description, is_default, created_at, "
            "last_seq, member_count) VALUES (?, ?, ?, '', 0, ?, ?, 0)",
            (f"room_city_{room}", room, room, stamp, count),
        )
        db.executemany(
            f"INSERT INTO city_room_messages ({', '.join(MESSAGE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})",
            filler_rows(room, count, stamp),
        )
        db.execute("ANALYZE")


async def fill_room(db_url: str, room: str, count: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO city_rooms (id, slug, name, description, is_default, created_at, "
            "last_seq, member_count) VALUES ($1, $2, $2, '', false, now(), $3, 0)",
            f"room_city_{room}",
            room,
            count,
        )
        await conn.copy_records_to_table(
            "city_room_messages",
            records=filler_rows(room, count, datetime.now(UTC)),
            columns=MESSAGE_COLUMNS,
        )
        # What an operator (or autovacuum, soon after) does after a bulk load: the visibility
        # map, hint bits and statistics, so reads measure the steady state, not a first touch.
        await conn.execute("VACUUM (ANALYZE) city_room_messages")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller figures, for a smoke run")
    parser.add_argument("--only", default="fanout,rooms,post,idle,history", help="scenarios to run")
    parser.add_argument(
        "--stores",
        default="postgres,sqlite",
        help="postgres (PostgreSQL + Redis) and/or sqlite (SQLite + in-process presence)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/RESULTS.md as it is"
    )
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    await asyncio.to_thread(OUT.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread((OUT / "suite.jsonl").unlink, missing_ok=True)
    subs = 200 if args.quick else 1000
    # Finer steps near where both targets top out on these machines (90-150 posts/s), so
    # that the ratio is not set by the spacing of the steps.
    ladder = (
        [25, 50] if args.quick else [25, 50, 75, 90, 100, 110, 125, 140, 150, 175, 200, 250, 300]
    )
    picked = [int(r) for r in os.environ.get("BENCH_RATES", "").split(",") if r]
    ladders = {
        "fanout": picked or ladder,  # BENCH_RATES=25 runs one step
        # Posts per second in all, each reaching the 20 sockets of its room (BENCH_ROOM_RATES=
        # 250,500 picks the steps, for a machine slower than the ladder's first step).
        "rooms": [int(r) for r in os.environ.get("BENCH_ROOM_RATES", "").split(",") if r]
        or ([250, 500] if args.quick else [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]),
    }
    seconds = 3.0 if args.quick else 5.0
    # 20,000 is the open-file limit per process here, and the server needs a few more fds than
    # sockets: 19,000 is the most one instance can hold.
    idle_sockets = 1000 if args.quick else 19000
    history_rows = 10_000 if args.quick else 1_000_000

    summaries: dict[str, dict[str, Any]] = {}
    for store in args.stores.split(","):
        if store == "postgres":
            async with scratch("suite") as space:
                summaries[store] = await run_suite(
                    args, store, space, subs, ladders, seconds, idle_sockets, history_rows
                )
        else:
            summaries[store] = await run_suite(
                args, store, None, subs, ladders, seconds, idle_sockets, history_rows
            )
    print(json.dumps({"summary": summaries}, indent=2), flush=True)
    if not args.no_write:
        await asyncio.to_thread(write_results, summaries, subs)


async def run_suite(
    args: argparse.Namespace,
    store: str,
    space: Scratch | None,
    subs: int,
    ladders: dict[str, list[int]],
    seconds: float,
    idle_sockets: int,
    history_rows: int,
) -> dict[str, Any]:
    env = {
        "CITY_JWT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
        **UNLIMITED,
        "CITY_WS_SEND_QUEUE": "100000",
    }
    data_dir = OUT / f"{store}-{secrets.token_hex(3)}"
    await asyncio.to_thread(data_dir.mkdir, parents=True)
    env["CITY_DATA_DIR"] = str(data_dir)
    if space is not None:
        env |= {
            "DATABASE_URL": space.database_url,
            "REDIS_URL": REDIS,
            "CITY_REDIS_PREFIX": space.redis_prefix,
            "DATABASE_POOL_SIZE": "20",
        }
    else:  # SQLite under the data directory, presence in process
        env |= {"DATABASE_URL": "", "REDIS_URL": ""}
    service = Instance(f"bench-suite-{store}", env, OUT)
    baseline, bws, bpub = await asyncio.to_thread(start_baseline)
    summary: dict[str, Any] = {}
    try:
        await asyncio.to_thread(service.start)
        spid = service.proc.pid if service.proc else 0
        sws, shttp = f"ws://127.0.0.1:{service.port}", service.base_url
        only = set(args.only.split(","))
        for scenario in ("fanout", "rooms"):
            if scenario in only:
                await fanout_pair(
                    summary,
                    scenario,
                    (baseline.pid, bws, bpub),
                    (sws, shttp, spid),
                    ladders[scenario],
                    subs,
                    seconds,
                )
        if "post" in only:
            await post_run(summary, shttp, spid, seconds)
        if "idle" in only:
            if only & {"fanout", "rooms", "post"}:
                # A fresh process: memory freed by the scenarios before would take the new
                # sockets and hide what they cost (8.6 KiB measured that way where a fresh
                # service showed 19.2, bench/RESULTS.md).
                await asyncio.to_thread(service.stop)
                await asyncio.to_thread(service.start)
                spid = service.proc.pid if service.proc else 0
            await idle_run(summary, sws, shttp, spid, idle_sockets)
        if "history" in only:
            if space is not None:
                await fill_room(space.database_url, "big", history_rows)
            else:
                await asyncio.to_thread(
                    fill_room_sqlite, data_dir / "city.sqlite3", "big", history_rows
                )
            (hist,) = await asyncio.to_thread(loadgen, "history", "--http", shttp, "--room", "big")
            print(json.dumps(hist), flush=True)
            summary["history"] = hist
    finally:
        await asyncio.to_thread(service.stop)
        baseline.terminate()
        await asyncio.to_thread(shutil.rmtree, data_dir, True)
    return summary


async def fanout_pair(
    summary: dict[str, Any],
    scenario: str,
    baseline: tuple[int, int, int],
    service: tuple[str, str, int],
    rates: list[int],
    subs: int,
    seconds: float,
) -> None:
    """Both ladders of ``scenario`` (fanout or rooms) interleaved, baseline then service at
    each rate, so that the machine's drift over the run (it is shared and noisy) falls on both
    alike. A target leaves the ladder at its first step that fails twice in a row; the best
    passing step of each is reported."""
    bpid, bws, bpub = baseline
    sws, shttp, spid = service
    targets = {
        "baseline": ("baseline", f"ws://127.0.0.1:{bws}", f"http://127.0.0.1:{bpub}", bpid),
        "service": ("service", sws, shttp, spid),
    }
    best = await climb(targets, scenario, rates, subs, seconds)
    summary[scenario] = best


async def climb(
    targets: dict[str, tuple[str, str, str, int]],
    scenario: str,
    rates: list[int],
    subs: int,
    seconds: float,
) -> dict[str, dict[str, Any] | None]:
    """Each rate on every target in turn (name -> the paths it serves, ``baseline`` or
    ``service``, its ws and http bases and pid); a target leaves the ladder at its first step
    that fails twice in a row. The best passing step of each."""
    best: dict[str, dict[str, Any] | None] = dict.fromkeys(targets)
    climbing = set(targets)
    for rate in rates:
        for name, (kind, ws, http, pid) in targets.items():
            if name not in climbing:
                continue
            step = (kind, ws, http, pid, rate, subs, seconds, scenario, name)
            line = await asyncio.to_thread(fanout_step, *step)
            if not passed(line):  # a failure counts once it repeats
                line = await asyncio.to_thread(fanout_step, *step)
                line["second_try"] = True
            if passed(line):
                best[name] = line
            else:
                climbing.discard(name)
        if not climbing:
            break
    return best


def start_floor(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port), "--kind", kind],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/")
        except httpx.HTTPError:
            return False
        return True

    wait_for(ready, 20, "floor")
    return proc, port


async def post_run(summary: dict[str, Any], shttp: str, spid: int, seconds: float) -> None:
    """Posts against the framework floors (bench/floor.py: the same stack, storing nothing;
    with FastAPI, and bare ASGI as the service's post lane is), then against the service, in
    one run."""
    args = ["post", "--clients", "50", "--seconds", str(seconds * 2), "--room", "science"]
    floors: dict[str, dict[str, Any]] = {}
    for kind in ("fastapi", "asgi"):
        floor, fport = await asyncio.to_thread(start_floor, kind)
        try:
            (bare,) = await asyncio.to_thread(
                loadgen, *args, "--http", f"http://127.0.0.1:{fport}", "--pid", str(floor.pid)
            )
            bare["target"] = f"floor-{kind}"
            print(json.dumps(bare), flush=True)
            floors[kind] = bare
        finally:
            floor.terminate()
    (post,) = await asyncio.to_thread(loadgen, *args, "--http", shttp, "--pid", str(spid))
    post["target"] = "service"
    print(json.dumps(post), flush=True)
    summary["post"] = {"floor": floors["fastapi"], "floor_asgi": floors["asgi"], "service": post}


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


BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
RESULTS = Path("bench/RESULTS.md")


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next(
            (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model
        )
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = next((int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal")), 0)
    return (
        f"{os.cpu_count()} cores ({model}), {mem / 2**20:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def fmt(value: Any, unit: str = "") -> str:
    return (
        "—" if value is None else f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"
    )


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "—"


def results_block(summaries: dict[str, dict[str, Any]], subs: int) -> str:
    """The generated part of bench/RESULTS.md: the machine, the command, and per store a table
    of service against baseline (or the framework floor) with their ratio."""
    rows = []
    for store, s in summaries.items():
        name = {"postgres": "PostgreSQL + Redis", "sqlite": "SQLite, in process"}.get(store, store)
        for scenario, what in (
            ("fanout", f"fan-out to {subs:,} sockets in one room"),
            ("rooms", f"{subs:,} sockets in {ROOMS} rooms of {subs // ROOMS}"),
        ):
            if scenario not in s:
                continue
            b, v = s[scenario].get("baseline"), s[scenario].get("service")
            bd = b["deliveries_per_s"] if b else None
            vd = v["deliveries_per_s"] if v else None
            rows.append(
                f"| {name} | {what}: deliveries/s at the highest rate with "
                f"delivery 1.0 and p99 ≤ 50 ms | {fmt(vd)} (p99 {fmt(v and v['latency_p99_ms'])} "
                f"ms, {fmt(v and v['cpu_us_per_delivery'])} µs CPU each) | {fmt(bd)} (p99 "
                f"{fmt(b and b['latency_p99_ms'])} ms, {fmt(b and b['cpu_us_per_delivery'])} µs) | "
                f"{ratio(vd, bd)} |"
            )
        if "post" in s:
            v = s["post"]["service"]
            for key, label in (("floor", "FastAPI floor"), ("floor_asgi", "bare ASGI floor")):
                f = s["post"].get(key)
                if f is None:
                    continue
                rows.append(
                    f"| {name} | HTTP posts, 50 clients, one room: commits/s | "
                    f"{fmt(v['commits_per_s'])} (p99 {v['p99_ms']} ms, "
                    f"{v['server_cpu_ms_per_post']} ms CPU each) | {label} "
                    f"{fmt(f['commits_per_s'])} (p99 {f['p99_ms']} ms, "
                    f"{f['server_cpu_ms_per_post']} ms CPU each) | "
                    f"{ratio(v['commits_per_s'], f['commits_per_s'])} |"
                )
        if "idle" in s:
            i = s["idle"]
            rows.append(
                f"| {name} | {fmt(i['sockets'])} idle room sockets: server memory per socket | "
                f"{i['kib_per_socket']} KiB | target 16 KiB | "
                f"{ratio(i['kib_per_socket'], 16)} of the target |"
            )
        if "history" in s:
            h = s["history"]
            rows.append(
                f"| {name} | history page (50) at {fmt(h['messages_in_room'])} messages: p50 / "
                f"p99 | {h['p50_ms']} / {h['p99_ms']} ms | `GET /healthz` {h['healthz_p50_ms']} / "
                f"{h['healthz_p99_ms']} ms | {ratio(h['p99_ms'], h['healthz_p99_ms'])} |"
            )
    command = "ulimit -n 20000; .venv/bin/python -m bench.suite " + " ".join(sys.argv[1:])
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    return "\n".join(
        [
            BEGIN,
            f"## Latest full run (written by `bench.suite`, {when} UTC)",
            "",
            f"Machine: {machine()}; the load generator, the servers and the stores share it.",
            "",
            f"    {command.strip()}",
            "",
            "| store | scenario | service | baseline (same run) | service / baseline |",
            "|---|---|---|---|---|",
            *rows,
            END,
        ]
    )


def write_results(summaries: dict[str, dict[str, Any]], subs: int) -> None:
    block = results_block(summaries, subs)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{block}\n{body}"
    RESULTS.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
