"""Unread counts, notifications and reactions (issue 21): three scenarios, each printing a short
summary and one JSON line (about 7, 2 and 6 minutes with the defaults).

    ulimit -n 20000; .venv/bin/python -m bench.unread --scenario me-unread \\
        [--messages-per-room 20000,200000] [--other-rooms 0] [--clients 20] [--seconds 20]
    ulimit -n 20000; .venv/bin/python -m bench.unread --scenario reactions \\
        [--clients 50] [--seconds 10] [--rounds 3] [--rooms 1]
    ulimit -n 20000; .venv/bin/python -m bench.unread --scenario unread-push \\
        [--members 1000] [--rate 50] [--seconds 30] [--rounds 3] [--old 4b228fe~1] [--new REV]

Every server is one ``daarion-city serve`` on a scratch PostgreSQL database and Redis key prefix
of its own (``bench.common.scratch``), with the abuse limits lifted, pinned to CPU 0 while this
load generator runs on CPU 1 (as ``bench/reads.py``). ``--rev`` (``--new`` for unread-push)
runs the package of a git revision instead of the working tree (``bench.compare.export``);
``--pg-setting NAME=VALUE`` sets a PostgreSQL setting for every session of the server's database
(``ALTER DATABASE ... SET``), to try one. PostgreSQL's CPU is that of the client backends of
the server's database (``/proc``), so not autovacuum's.

me-unread: ``GET /city/me/unread`` of a user who joined 50 rooms, each of
``--messages-per-room`` messages (a comma-separated list runs each size in turn, on a fresh
database and server; a million per room, 50 million rows, would take about 11 minutes and
12 GB to write on 2 cores, so the default is 20,000 then 200,000). The history is written
straight into PostgreSQL with ``generate_series`` once the server has migrated its database: the
rooms (with ``last_seq``, ``last_message_seq`` and ``message_count``), their messages
(``ordinal = seq``), the user's membership and a read marker per room between 26% and 75% of its
history, ``--deleted`` deleted messages after each marker, and ``--mentions`` mention
notifications after it (plus five before it); ``--other-rooms`` more rooms of 20 members each,
none of them the user's; then ``VACUUM (ANALYZE)``, as an operator or autovacuum would after a
bulk load. One answer is checked against the counts the data implies. Then ``--rounds`` rounds
of: one client alone for 5 s (the uncontended cost); ``--clients`` closed-loop clients (raw
HTTP/1.1 keep-alive, no think time) for ``--seconds`` (requests/s, p50/p90/p99, the server's CPU
per request); beside it, ``GET /city/me`` under the same crowd (an authenticated read of one
small statement: the floor of such a read here) and the counts statement alone, prepared, from
as many asyncpg connections (what the database gives). Medians over the rounds. The counts
statement of ``storage/unread.py`` is run under ``EXPLAIN ANALYZE``, with the custom plan and
with the generic plan a prepared statement may switch to: its execution time (median of 5),
whether JIT compiled it, and every scan of ``city_room_messages`` in it. Goal: p99 <= 20 ms.

reactions: one server; posts (``POST .../messages``, the loadgen ``post`` scenario's clients)
and reaction changes (``PUT`` then ``DELETE .../reactions/{emoji}`` of one user on one of the
room's 100 newest messages, each request a real change that takes a seq) in alternating rounds
of ``--seconds``, ``--clients`` clients each, in ``--rooms`` rooms (clients spread over them),
after a warm-up round of each. Each round's committed changes are checked against the rooms'
``last_seq`` (every request answered 200/201 took exactly one seq). Goal: reactions/s >=
posts/s (medians).

unread-push: a room of ``--members`` joined users, each with an open presence socket (read
continuously; presence TTL raised so none expires mid-round), and one poster at ``--rate``
messages a second for ``--seconds``. The server process's CPU seconds (``/proc/PID/stat``) from
the first post until ``interval + 1`` s after the last (the last push after a burst), with the
unread pushes (``--new``, ``CITY_UNREAD_PUSH_INTERVAL`` = ``--interval``, default 2 s) against
the revision before them (``--old``: no unread pushes, no personal events at all), in
alternating rounds (each version first in every other one), each on a fresh server and
database. Also: PostgreSQL's CPU over the same window, the ``unread.update`` frames the sockets
got, and how many sockets' last one carried the final count. Goal: CPU ratio <= 2.0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from tests.cluster import Instance
from websockets.asyncio.client import ClientConnection, connect

from bench.common import PG, pct, scratch
from bench.compare import WORKTREE, export, version_env
from bench.loadgen import RawHttp, cpu_seconds, token

OLD = "4b228fe~1"  # the commit before read markers, unread counts and notifications


# --- shared -----------------------------------------------------------------------------------
PG_SETTINGS: dict[str, str] = {}  # --pg-setting: for the sessions of each scratch database


@contextlib.asynccontextmanager
async def server(
    name: str, src: Path, tmp: Path, extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[Instance, str]]:
    """A service running the package at ``src`` on a scratch database of its own, pinned to
    CPU 0 (this process to CPU 1); yields it and its database URL."""
    async with scratch("unread") as space:
        if PG_SETTINGS:  # before the server connects: every session of its database has them
            admin = await asyncpg.connect(PG, timeout=30)
            try:
                db = space.database_url.rsplit("/", 1)[1]
                for key, value in PG_SETTINGS.items():
                    await admin.execute(f"ALTER DATABASE \"{db}\" SET {key} = '{value}'")
            finally:
                await admin.close()
        data = tmp / f"data-{name}"
        data.mkdir(parents=True, exist_ok=True)
        env = version_env(space, src, data) | {"CITY_WS_SEND_QUEUE": "100000"} | (extra or {})
        inst = Instance(f"bench-unread-{name}", env, tmp)
        await asyncio.to_thread(inst.start)
        try:
            assert inst.proc is not None
            with contextlib.suppress(OSError):  # one core for the server, one for us
                os.sched_setaffinity(inst.proc.pid, {0})
                os.sched_setaffinity(0, {1})
            yield inst, space.database_url
        finally:
            await asyncio.to_thread(inst.stop)


def pg_cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = cpu_seconds(pid)
    return out


async def backends(url: str) -> list[int]:
    """The PostgreSQL backends serving clients of the database at ``url`` (the server's pool;
    not autovacuum, whose workers come and go with what earlier rounds wrote)."""
    db = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG, timeout=30)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = $1 AND backend_type = 'client backend'",
            db,
        )
    finally:
        await conn.close()
    return [int(r[0]) for r in rows]


def pid_of(inst: Instance) -> int:
    assert inst.proc is not None
    return inst.proc.pid


def auth(user_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user_id)}"}


def ms(values: list[float], q: float) -> float:
    return round(pct(values, q), 2)


def median(values: list[float], digits: int = 3) -> float:
    return round(statistics.median(values), digits)


async def in_parallel(jobs: list[Callable[[], Awaitable[None]]], width: int) -> None:
    """Run ``jobs``, at most ``width`` at a time."""
    gate = asyncio.Semaphore(width)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def create_room(base: str, slug: str, owner: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post("/city/rooms", json={"slug": slug, "name": slug}, headers=auth(owner))
        r.raise_for_status()


async def closed_loop(
    base: str,
    clients: int,
    seconds: float,
    request: Callable[[int, int, RawHttp], Awaitable[int]],
    ok: int,
    pid: int,
) -> dict[str, Any]:
    """``clients`` loops sending ``request(client, n, http)`` back to back for ``seconds``; the
    answers with status ``ok``, their latency, the other statuses and the server's CPU."""
    latencies: list[float] = []
    others: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        http = RawHttp(base)
        n = 0
        try:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                status = await request(i, n, http)
                if status == ok:
                    latencies.append((time.perf_counter() - t) * 1000)
                else:
                    others[status] = others.get(status, 0) + 1
                n += 1
        finally:
            await http.close()

    cpu0, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu0
    return {
        "clients": clients,
        "answered": len(latencies),
        "per_s": round(len(latencies) / wall),
        "p50_ms": ms(latencies, 0.5),
        "p90_ms": ms(latencies, 0.9),
        "p99_ms": ms(latencies, 0.99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "other_statuses": others,
        "server_cpu_ms_each": round(cpu / max(len(latencies), 1) * 1000, 3),
        "server_cores": round(cpu / wall, 2),
    }


# --- me-unread --------------------------------------------------------------------------------
READER = "u_reader"
ROOMS = 50
DELETED_STEP, NOTIFY_STEP = 7, 3  # deleted messages and mentions after a marker, every n seqs


def marker_of(room: int, per_room: int) -> int:
    """The reader's marker in room ``room`` (1..50): 26% to 75% of its history."""
    return per_room * (25 + room) // 100


async def build_history(url: str, per_room: int, deleted: int, mentions: int) -> float:
    """The 50 rooms, their history, the reader's memberships, markers and notifications, written
    straight into the migrated database; answers the seconds it took."""
    assert marker_of(ROOMS, per_room) + DELETED_STEP * deleted < per_room, "too few messages"
    started = time.perf_counter()
    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute(
            "INSERT INTO city_rooms (id, slug, name, description, is_default, created_at,"
            " last_seq, member_count, last_message_seq, message_count)"
            " SELECT 'room_city_b' || r, 'b' || r, 'Bench ' || r, '', false, now(), $1, 1, $1, $1"
            " FROM generate_series(1, $2::int) r",
            per_room,
            ROOMS,
        )
        for room in range(1, ROOMS + 1):
            # Every DELETED_STEP-th message after the marker, ``deleted`` of them, is deleted.
            await conn.execute(
                "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                " body, created_at, ordinal, deleted, mentions, reactions)"
                " SELECT 'm_b' || $1::int || '_' || s, 'room_city_b' || $1::int, s, 'u_filler',"
                " 'filler', CASE WHEN del THEN '' ELSE 'message ' || s END, now(), s, del,"
                " '[]', '[]'"
                " FROM (SELECT s, s > $2 AND s <= $2 + $3::int * $4::int AND (s - $2) % $3 = 0"
                "  AS del FROM generate_series(1, $5::bigint) s) g",
                room,
                marker_of(room, per_room),
                DELETED_STEP,
                deleted,
                per_room,
            )
        await conn.execute(
            "INSERT INTO city_room_members (room_id, user_id, name, joined_at)"
            " SELECT 'room_city_b' || r, $1, $1, now() FROM generate_series(1, $2::int) r",
            READER,
            ROOMS,
        )
        await conn.executemany(
            "INSERT INTO city_read_markers (user_id, room_id, last_read_seq) VALUES ($1, $2, $3)",
            [(READER, f"room_city_b{r}", marker_of(r, per_room)) for r in range(1, ROOMS + 1)],
        )
        notified = [
            (f"ntf_b{r}_{seq}", READER, f"room_city_b{r}", seq)
            for r in range(1, ROOMS + 1)
            for k in [*range(-5, 0), *range(1, mentions + 1)]  # five read, the rest unread
            if (seq := marker_of(r, per_room) + NOTIFY_STEP * k) > 0
        ]
        await conn.executemany(
            "INSERT INTO city_notifications (id, user_id, room_id, seq, kind, sender_id,"
            " created_at) VALUES ($1, $2, $3, $4, 'mention', 'u_filler', now())",
            notified,
        )
        await conn.execute(
            "INSERT INTO city_users (user_id, name, first_seen) VALUES ($1, $1, now())"
            " ON CONFLICT DO NOTHING",
            READER,
        )
        # What an operator (or autovacuum, soon after) does after a bulk load (bench.suite).
        for table in (
            "city_room_messages",
            "city_rooms",
            "city_room_members",
            "city_read_markers",
            "city_notifications",
        ):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()
    return time.perf_counter() - started


def expected_counts(per_room: int, deleted: int, mentions: int) -> dict[str, tuple[int, int, int]]:
    """room_id -> (last_read_seq, unread_count, mention_count) that the data implies."""
    out = {}
    for r in range(1, ROOMS + 1):
        marker = marker_of(r, per_room)
        # A mention at marker + 3k is of a deleted message when 3k is a multiple of 7 (and
        # within the deleted ones).
        live = sum(
            1
            for k in range(1, mentions + 1)
            if not (
                NOTIFY_STEP * k % DELETED_STEP == 0 and NOTIFY_STEP * k <= DELETED_STEP * deleted
            )
        )
        out[f"room_city_b{r}"] = (marker, per_room - marker - deleted, live)
    return out


def counts_statement() -> str:
    """The statement ``GET /city/me/unread`` runs (storage/unread.py), with ``$1`` for the users."""
    from daarion_city.storage.unread import _counts

    return _counts("postgresql", False, True).text.replace(":users", "$1")


def scans(plan: dict[str, Any]) -> list[str]:
    """Every scan in a JSON plan, as ``node type on relation (index)``."""
    found = []
    if "Relation Name" in plan:
        index = f" ({plan['Index Name']})" if "Index Name" in plan else ""
        found.append(f"{plan['Node Type']} on {plan['Relation Name']}{index}")
    for child in plan.get("Plans", []):
        found += scans(child)
    return found


async def explain(url: str) -> dict[str, Any]:
    """The counts statement under EXPLAIN ANALYZE: the custom plan (as a first execution gets)
    and the generic plan (as a prepared statement may get from its sixth execution)."""
    sql = counts_statement()
    conn = await asyncpg.connect(url, timeout=30)
    out: dict[str, Any] = {}
    try:
        for mode in ("custom", "generic"):
            await conn.execute(f"SET plan_cache_mode = force_{mode}_plan")
            await conn.execute(f"PREPARE counts_{mode}(varchar[]) AS {sql}")
            run = f"EXECUTE counts_{mode}('{{{READER}}}')"
            times, plan = [], {}
            for _ in range(6):  # the first one warms the cache; the median of the other five
                (raw,) = await conn.fetchrow(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {run}")
                (plan,) = json.loads(raw)
                times.append(float(plan["Execution Time"]))
            text = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {run}")
            found = scans(plan["Plan"])
            out[mode] = {
                "execution_ms": median(times[1:]),
                "planning_ms": round(float(plan["Planning Time"]), 3),
                "shared_buffers_hit": plan["Plan"].get("Shared Hit Blocks"),
                "shared_buffers_read": plan["Plan"].get("Shared Read Blocks"),
                "scans_of_messages": sorted(
                    {s for s in found if s.split(" on ", 1)[1].startswith("city_room_messages ")}
                ),
                "seq_scans": sorted({s for s in found if s.startswith("Seq Scan")}),
                "jit": "JIT" in plan,
                "text": "\n".join(r[0] for r in text),
            }
    finally:
        await conn.close()
    return out


async def statement_crowd(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """The counts statement alone, prepared, from ``clients`` asyncpg connections back to back:
    what the database gives whatever the service does."""
    sql, latencies = counts_statement(), []
    conns = [await asyncpg.connect(url, timeout=30) for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    async def loop(conn: asyncpg.Connection) -> None:
        prepared = await conn.prepare(sql)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await prepared.fetch([READER])
            latencies.append((time.perf_counter() - t) * 1000)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(loop(c) for c in conns))
        wall = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    return {
        "clients": clients,
        "per_s": round(len(latencies) / wall),
        "p50_ms": ms(latencies, 0.5),
        "p99_ms": ms(latencies, 0.99),
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure of ``closed_loop``'s answers, the median over the rounds."""
    keys = ["per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_each"]
    return {k: median([r[k] for r in rounds], 2) for k in keys if k in rounds[0]}


async def me_unread_size(
    args: argparse.Namespace, src: Path, tmp: Path, per_room: int
) -> dict[str, Any]:
    async with server(f"me-{per_room}", src, tmp) as (inst, url):
        built = await build_history(url, per_room, args.deleted, args.mentions)
        if args.other_rooms:
            built += await other_rooms(url, args.other_rooms)
        print(
            f"  {ROOMS} rooms of {per_room:,} messages ({ROOMS * per_room:,} in all)"
            f"{f' and {args.other_rooms:,} other rooms' if args.other_rooms else ''} written in "
            f"{built:.0f} s",
            flush=True,
        )
        want = expected_counts(per_room, args.deleted, args.mentions)
        async with httpx.AsyncClient(base_url=inst.base_url, timeout=30) as http:
            answer = (await http.get("/city/me/unread", headers=auth(READER))).json()
        got = {
            c["room_id"]: (c["last_read_seq"], c["unread_count"], c["mention_count"])
            for c in answer
            if c["room_id"] in want
        }
        if got != want:
            wrong = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
            raise AssertionError(f"wrong counts (got, wanted): {dict(list(wrong.items())[:5])}")
        headers = auth(READER)

        async def get(_i: int, _n: int, http: RawHttp) -> int:
            return await http.get("/city/me/unread", headers)

        async def get_me(_i: int, _n: int, http: RawHttp) -> int:
            return await http.get("/city/me", headers)

        pid, base = pid_of(inst), inst.base_url
        await closed_loop(base, args.clients, 2.0, get, 200, pid)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("alone", "crowd", "me", "sql")}
        for r in range(args.rounds):
            runs["alone"].append(await closed_loop(base, 1, 5.0, get, 200, pid))
            runs["crowd"].append(await closed_loop(base, args.clients, args.seconds, get, 200, pid))
            # Beside it: an authenticated read of one small statement (the floor of any such
            # read here), and the counts statement alone from as many database connections.
            runs["me"].append(
                await closed_loop(base, args.clients, args.seconds / 2, get_me, 200, pid)
            )
            runs["sql"].append(await statement_crowd(url, args.clients, args.seconds / 2))
            crowd, alone, me, sql = (runs[k][-1] for k in ("crowd", "alone", "me", "sql"))
            print(
                f"  round {r + 1}: {crowd['clients']} clients {crowd['per_s']:,}/s, p50 "
                f"{crowd['p50_ms']} / p90 {crowd['p90_ms']} / p99 {crowd['p99_ms']} ms "
                f"({crowd['server_cpu_ms_each']} ms of server CPU each); one client p50 "
                f"{alone['p50_ms']} / p99 {alone['p99_ms']} ms; GET /city/me {me['per_s']:,}/s, "
                f"p99 {me['p99_ms']} ms; the statement alone {sql['per_s']:,}/s, p99 "
                f"{sql['p99_ms']} ms",
                flush=True,
            )
        plans = await explain(url)
    return {
        "messages_per_room": per_room,
        "messages": ROOMS * per_room,
        "other_rooms": args.other_rooms,
        "rooms_listed": len(answer),
        "counts_checked": len(got),
        "build_s": round(built),
        "one_client": medians(runs["alone"]),
        "crowd": medians(runs["crowd"]) | {"clients": args.clients},
        "floor_city_me": medians(runs["me"]),
        "statement_alone": medians(runs["sql"]),
        "rounds": runs,
        "explain": plans,
    }


async def other_rooms(url: str, count: int) -> float:
    """``count`` more rooms in the city, none of them the reader's, each with 20 members."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute(
            "INSERT INTO city_rooms (id, slug, name, description, is_default, created_at,"
            " last_seq, member_count, last_message_seq, message_count)"
            " SELECT 'room_city_x' || r, 'x' || r, 'Other ' || r, '', false, now(), 0, 20, 0, 0"
            " FROM generate_series(1, $1::int) r",
            count,
        )
        await conn.execute(
            "INSERT INTO city_room_members (room_id, user_id, name, joined_at)"
            " SELECT 'room_city_x' || r, 'u_other_' || u, 'other', now()"
            " FROM generate_series(1, $1::int) r, generate_series(1, 20) u",
            count,
        )
        for table in ("city_rooms", "city_room_members"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def me_unread(args: argparse.Namespace, src: Path, tmp: Path) -> dict[str, Any]:
    sizes = []
    for per_room in (int(s) for s in args.messages_per_room.split(",")):
        result = await me_unread_size(args, src, tmp, per_room)
        sizes.append(result)
        crowd, alone, custom, generic = (
            result["crowd"],
            result["one_client"],
            result["explain"]["custom"],
            result["explain"]["generic"],
        )
        print(
            f"  {result['messages']:,} messages, medians: {crowd['clients']} clients "
            f"{crowd['per_s']:,.0f}/s, p50 {crowd['p50_ms']} / p90 {crowd['p90_ms']} / p99 "
            f"{crowd['p99_ms']} ms ({crowd['server_cpu_ms_each']} ms of server CPU each); one "
            f"client p50 {alone['p50_ms']} / p99 {alone['p99_ms']} ms; beside it GET /city/me "
            f"{result['floor_city_me']['per_s']:,.0f}/s, p99 {result['floor_city_me']['p99_ms']} "
            f"ms, the statement alone on {crowd['clients']} connections "
            f"{result['statement_alone']['per_s']:,.0f}/s, p99 "
            f"{result['statement_alone']['p99_ms']} ms; statement {custom['execution_ms']} ms "
            f"({custom['shared_buffers_hit']} buffers{', with JIT' if custom['jit'] else ''}; "
            f"generic plan {generic['execution_ms']} ms{' with JIT' if generic['jit'] else ''})"
            f"; scans of city_room_messages: "
            f"{', '.join(custom['scans_of_messages'])}; seq scans: "
            f"{', '.join(sorted(set(custom['seq_scans'] + generic['seq_scans']))) or 'none'}",
            flush=True,
        )
    print(sizes[-1]["explain"]["custom"]["text"], flush=True)
    for size in sizes:
        for plan in size["explain"].values():
            del plan["text"]
    worst = max(s["crowd"]["p99_ms"] for s in sizes)
    return {
        "scenario": "me-unread",
        "rooms": ROOMS,
        "deleted_after_marker_per_room": args.deleted,
        "mentions_after_marker_per_room": args.mentions,
        "sizes": sizes,
        "goal_p99_ms": 20,
        "goal_met": worst <= 20,
    }


# --- reactions --------------------------------------------------------------------------------
EMOJI = ["👍", "❤️", "😂", "🎉", "👀"]


async def seqs_of(url: str, rooms: list[str]) -> int:
    """The rooms' timeline positions, summed: every committed change took one."""
    conn = await asyncpg.connect(url, timeout=30)
    try:
        ids = [f"room_city_{r}" for r in rooms]
        return int(
            await conn.fetchval("SELECT sum(last_seq) FROM city_rooms WHERE id = ANY($1)", ids)
        )
    finally:
        await conn.close()


async def newest(url: str, room: str, count: int) -> list[int]:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        rows = await conn.fetch(
            "SELECT seq FROM city_room_messages WHERE room_id = $1 AND NOT deleted"
            " ORDER BY seq DESC LIMIT $2",
            f"room_city_{room}",
            count,
        )
    finally:
        await conn.close()
    return [int(r[0]) for r in rows]


async def reactions(args: argparse.Namespace, src: Path, tmp: Path) -> dict[str, Any]:
    rooms = [f"react-{r}" for r in range(args.rooms)]
    runs: dict[str, list[dict[str, Any]]] = {"posts": [], "reactions": []}
    async with server("reactions", src, tmp) as (inst, url):
        pid, base = pid_of(inst), inst.base_url
        for room in rooms:
            await create_room(base, room, "u_owner")
        seed = RawHttp(base)
        for i in range(100):  # the messages the first reaction round reacts to
            for room in rooms:
                body = orjson.dumps({"body": f"seed {i}"})
                await seed.post(f"/city/rooms/{room}/messages", body, auth("u_seed"))
        await seed.close()
        poster_headers = [auth(f"u_poster_{i}") for i in range(args.clients)]
        react_headers = [
            auth(f"u_react_{i}") | {"content-length": "0"} for i in range(args.clients)
        ]
        round_no = 0

        async def post(i: int, n: int, http: RawHttp) -> int:
            body = orjson.dumps({"body": f"post {i} {n}", "client_msg_id": f"{round_no}-{i}-{n}"})
            return await http.post(
                f"/city/rooms/{rooms[i % len(rooms)]}/messages", body, poster_headers[i]
            )

        targets: dict[str, list[int]] = {}

        async def react(i: int, n: int, http: RawHttp) -> int:
            # Client i alone reacts as u_react_i: PUT then DELETE of its emoji on one message,
            # then the next message; every request changes the message's reactions.
            room = rooms[i % len(rooms)]
            seqs = targets[room]
            seq = seqs[(i + n // 2) % len(seqs)]
            emoji = urllib.parse.quote(EMOJI[i % len(EMOJI)])
            path = f"/city/rooms/{room}/messages/{seq}/reactions/{emoji}"
            return await http.request("DELETE" if n % 2 else "PUT", path, b"", react_headers[i])

        async def one(kind: str, seconds: float) -> dict[str, Any]:
            nonlocal round_no
            round_no += 1
            if kind == "reactions":
                for room in rooms:
                    targets[room] = await newest(url, room, 100)
            before = await seqs_of(url, rooms)
            do, ok = (post, 201) if kind == "posts" else (react, 200)
            pg_pids = await backends(url)
            pg0 = pg_cpu(pg_pids)
            result = await closed_loop(base, args.clients, seconds, do, ok, pid)
            pg1 = pg_cpu(sorted(set(pg_pids) | set(await backends(url))))
            pg = sum(pg1.get(p, 0.0) - pg0.get(p, 0.0) for p in pg1)
            result["postgres_cpu_ms_each"] = round(pg / max(result["answered"], 1) * 1000, 3)
            # A reaction round can end between a PUT and its DELETE: the last PUTs stay.
            result["seqs_taken"] = await seqs_of(url, rooms) - before
            result["kind"] = kind
            return result

        await one("posts", 2.0)  # warm-up, not counted
        await one("reactions", 2.0)
        for r in range(args.rounds):
            for kind in ("posts", "reactions"):
                result = await one(kind, args.seconds)
                runs[kind].append(result)
                print(
                    f"  round {r + 1} {kind}: {result['per_s']:,}/s, p50 {result['p50_ms']} / "
                    f"p99 {result['p99_ms']} ms, {result['server_cpu_ms_each']} ms of server CPU "
                    f"and {result['postgres_cpu_ms_each']} ms of PostgreSQL CPU each, "
                    f"{result['answered']:,} answered, {result['seqs_taken']:,} seqs taken, "
                    f"other statuses {result['other_statuses']}",
                    flush=True,
                )
    summary = {
        kind: {
            "per_s": median([r["per_s"] for r in rs], 0),
            "p99_ms": median([r["p99_ms"] for r in rs], 2),
            "server_cpu_ms_each": median([r["server_cpu_ms_each"] for r in rs]),
            "server_cores": median([r["server_cores"] for r in rs], 2),
            "postgres_cpu_ms_each": median([r["postgres_cpu_ms_each"] for r in rs]),
        }
        for kind, rs in runs.items()
    }
    ratio = summary["reactions"]["per_s"] / max(summary["posts"]["per_s"], 1)
    return {
        "scenario": "reactions",
        "clients": args.clients,
        "rooms": args.rooms,
        "seconds": args.seconds,
        "rounds": runs,
        "median": summary,
        "reactions_per_post": round(ratio, 3),
        "every_answer_took_one_seq": all(
            r["seqs_taken"] == r["answered"] for rs in runs.values() for r in rs
        ),
        "goal_met": ratio >= 1.0,
    }


# --- unread-push ------------------------------------------------------------------------------
class Tally:
    """What the presence sockets received: all frames, and the ``unread.update`` ones."""

    def __init__(self, sockets: int) -> None:
        self.frames = 0
        self.updates = 0
        self.last_update: list[str | None] = [None] * sockets
        self.errors = 0

    async def read(self, i: int, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self.frames += 1
                if isinstance(raw, str) and "unread.update" in raw:
                    self.updates += 1
                    self.last_update[i] = raw
        except Exception:
            self.errors += 1


async def settle(tally: Tally, quiet: float = 1.0, limit: float = 120.0) -> None:
    """Until no frame has arrived for ``quiet`` seconds (the joins' presence storm is over)."""
    deadline = time.perf_counter() + limit
    seen = -1
    while seen != tally.frames and time.perf_counter() < deadline:
        seen = tally.frames
        await asyncio.sleep(quiet)


async def push_round(
    label: str, src: Path, tmp: Path, args: argparse.Namespace, interval: float
) -> dict[str, Any]:
    # No presence expires during a round; the new version's push interval as asked.
    extra = {"PRESENCE_TTL": "3600"}
    if label == "new":
        extra["CITY_UNREAD_PUSH_INTERVAL"] = str(interval)
    async with server(label, src, tmp, extra) as (inst, url):
        base, pid = inst.base_url, pid_of(inst)
        await create_room(base, "push", "u_poster")
        members = [f"u_m{i}" for i in range(args.members)]
        clients = [RawHttp(base) for _ in range(20)]
        free = asyncio.Queue[RawHttp]()
        for c in clients:
            free.put_nowait(c)

        def join(user: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                http = await free.get()
                try:
                    status = await http.post("/city/rooms/push/join", b"", auth(user))
                    assert status == 200, f"join answered {status}"
                finally:
                    free.put_nowait(http)

            return run

        started = time.perf_counter()
        await in_parallel([join(u) for u in members], 20)
        for c in clients:
            await c.close()
        tally = Tally(len(members))
        sockets: list[ClientConnection] = []
        readers: list[asyncio.Task[None]] = []

        def opener(i: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                ws = await connect(
                    inst.ws_url(f"/ws/city/presence?token={token(members[i])}"),
                    max_size=None,
                    compression=None,
                    ping_interval=None,
                    open_timeout=120,
                )
                sockets.append(ws)
                readers.append(asyncio.create_task(tally.read(i, ws)))

            return run

        await in_parallel([opener(i) for i in range(len(members))], 50)
        await settle(tally)
        setup = time.perf_counter() - started
        poster = RawHttp(base)
        headers = auth("u_poster")
        frames0, updates0 = tally.frames, tally.updates
        pg_pids = await backends(url)
        cpu0, pg0, t0 = cpu_seconds(pid), pg_cpu(pg_pids), time.perf_counter()
        posted = 0
        while (elapsed := time.perf_counter() - t0) < args.seconds:
            body = orjson.dumps({"body": f"live {posted}"})
            if await poster.post("/city/rooms/push/messages", body, headers) == 201:
                posted += 1
            await asyncio.sleep(max(0.0, (posted + 1) / args.rate - elapsed))
        posting = time.perf_counter() - t0
        await asyncio.sleep(interval + 1.0)  # the last push after the burst
        pg_pids = sorted(set(pg_pids) | set(await backends(url)))
        cpu, pg1 = cpu_seconds(pid) - cpu0, pg_cpu(pg_pids)
        window = time.perf_counter() - t0
        await poster.close()
        finals = [orjson.loads(raw)["unread_count"] for raw in tally.last_update if raw]
        result = {
            "version": label,
            "members": len(members),
            "sockets": len(sockets),
            "setup_s": round(setup, 1),
            "posted": posted,
            "posts_per_s": round(posted / posting, 1),
            "window_s": round(window, 1),
            "server_cpu_s": round(cpu, 3),
            "server_cores": round(cpu / window, 3),
            "postgres_cpu_s": round(sum(pg1.get(p, 0.0) - pg0.get(p, 0.0) for p in pg1), 3),
            "frames": tally.frames - frames0,
            "unread_updates": tally.updates - updates0,
            "last_update_was_final": sum(1 for f in finals if f == posted),
            "socket_errors": tally.errors,
        }
        for ws in sockets:  # dropped, not closed: no offline storm while the server stops
            ws.transport.abort()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return result


async def unread_push(args: argparse.Namespace, src: Path, tmp: Path) -> dict[str, Any]:
    versions = {"old": export(args.old, tmp), "new": src}
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        # Each version goes first in every other round, so the machine's drift falls on both.
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for label in order:
            result = await push_round(label, versions[label], tmp, args, args.interval)
            runs[label].append(result)
            print(
                f"  round {r + 1} {label}: {result['server_cpu_s']} s of server CPU "
                f"({result['server_cores']} of a core) over {result['window_s']} s, postgres "
                f"{result['postgres_cpu_s']} s; {result['posted']} posts; "
                f"{result['unread_updates']:,} unread.update frames "
                f"({result['last_update_was_final']} sockets ended on the final count); "
                f"setup {result['setup_s']} s",
                flush=True,
            )
    summary = {
        label: {
            "rev": args.old if label == "old" else args.new,
            "server_cpu_s": median([r["server_cpu_s"] for r in rs]),
            "postgres_cpu_s": median([r["postgres_cpu_s"] for r in rs]),
            "unread_updates": median([r["unread_updates"] for r in rs], 0),
        }
        for label, rs in runs.items()
    }
    ratio = summary["new"]["server_cpu_s"] / summary["old"]["server_cpu_s"]
    db_ratio = summary["new"]["postgres_cpu_s"] / max(summary["old"]["postgres_cpu_s"], 1e-9)
    return {
        "scenario": "unread-push",
        "members": args.members,
        "rate": args.rate,
        "seconds": args.seconds,
        "interval": args.interval,
        "expected_updates": round(args.members * args.seconds / args.interval),
        "rounds": runs,
        "median": summary,
        "server_cpu_ratio": round(ratio, 3),
        "postgres_cpu_ratio": round(db_ratio, 3),
        "goal_met": ratio <= 2.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", choices=["me-unread", "reactions", "unread-push"], required=True
    )
    parser.add_argument(
        "--rev", default=WORKTREE, help="the version measured (me-unread, reactions)"
    )
    parser.add_argument("--seconds", type=float, help="20 (me-unread), 10 (reactions), 30 (push)")
    parser.add_argument("--clients", type=int, help="20 (me-unread), 50 (reactions)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages-per-room", default="20000,200000", help="a list: each in turn")
    parser.add_argument("--deleted", type=int, default=25, help="deleted after each marker")
    parser.add_argument("--mentions", type=int, default=10, help="mentions after each marker")
    parser.add_argument(
        "--other-rooms", type=int, default=0, help="me-unread: more rooms, not the reader's"
    )
    parser.add_argument("--rooms", type=int, default=1, help="reactions: rooms")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="unread-push: posts per second")
    parser.add_argument("--old", default=OLD, help="unread-push: the version without pushes")
    parser.add_argument("--new", default=WORKTREE, help="unread-push: the version with them")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="the new version's CITY_UNREAD_PUSH_INTERVAL"
    )
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the server's database (ALTER DATABASE ... SET), to try one",
    )
    args = parser.parse_args()
    PG_SETTINGS.update(kv.split("=", 1) for kv in args.pg_setting)
    defaults = {
        "me-unread": (20.0, 20),
        "reactions": (10.0, 50),
        "unread-push": (30.0, 0),
    }[args.scenario]
    args.seconds = args.seconds or defaults[0]
    args.clients = args.clients or defaults[1]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rev = args.new if args.scenario == "unread-push" else args.rev
        src = export(rev, tmp)
        print(f"{args.scenario} ({rev}):", flush=True)
        if args.scenario == "me-unread":
            result = await me_unread(args, src, tmp)
        elif args.scenario == "reactions":
            result = await reactions(args, src, tmp)
        else:
            result = await unread_push(args, src, tmp)
    result["rev"] = rev
    if PG_SETTINGS:
        result["pg_settings"] = PG_SETTINGS
    result["run_s"] = round(time.perf_counter() - started)
    print(summary_line(result), flush=True)
    print(json.dumps(result), flush=True)


def summary_line(result: dict[str, Any]) -> str:
    goal = "met" if result["goal_met"] else "NOT met"
    if result["scenario"] == "me-unread":
        p99 = ", ".join(
            f"{s['messages']:,} messages p99 {s['crowd']['p99_ms']} ms" for s in result["sizes"]
        )
        clients = result["sizes"][0]["crowd"]["clients"]
        return f"summary: GET /city/me/unread, {clients} clients: {p99}; goal p99 <= 20 ms {goal}"
    if result["scenario"] == "reactions":
        m = result["median"]
        return (
            f"summary (medians): posts {m['posts']['per_s']:,.0f}/s, reaction changes "
            f"{m['reactions']['per_s']:,.0f}/s: {result['reactions_per_post']}x; goal >= 1.0 {goal}"
        )
    m = result["median"]
    return (
        f"summary (medians): server CPU {m['new']['server_cpu_s']} s with unread pushes against "
        f"{m['old']['server_cpu_s']} s without: {result['server_cpu_ratio']}x (postgres "
        f"{result['postgres_cpu_ratio']}x); {m['new']['unread_updates']:,.0f} unread.update "
        f"frames (expected about {result['expected_updates']:,}); goal <= 2.0 {goal}"
    )


if __name__ == "__main__":
    asyncio.run(main())
