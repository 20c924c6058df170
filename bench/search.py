"""Message search at scale (issue 25): ``GET /city/search`` over ``--messages`` messages, on
PostgreSQL and on SQLite.

    .venv/bin/python -m bench.search [--backend postgresql,sqlite] [--messages 1000000] \\
        [--rooms 20] [--queries 200]

For each backend: a server of the working tree (in this process, ``tests.support.run_server``)
migrates a scratch database (PostgreSQL: ``bench.common.scratch``; SQLite: a file in a
temporary directory); then ``--messages`` messages are written straight into the database in
bulk, over ``--rooms`` rooms, oldest first (ids and ``created_at`` one millisecond apart, as
the service makes them). Each body is 6 to 17 words drawn from a vocabulary of 4,000 Latin and
1,000 Cyrillic made-up words with a Zipf-like law (rank ``r`` drawn as ``exp(u * ln V)``: the
commonest word is in about half the messages, the rarest in some hundreds). PostgreSQL: the
search index and the recency index are dropped for the load and built again after it (as
``CREATE INDEX`` after a bulk load), then ``VACUUM ANALYZE``; SQLite: the FTS5 triggers index
each row as it is inserted, in one transaction, then ``ANALYZE``.

Then ``--queries`` sequential requests (one client, keep-alive) per kind, each with its own words:

- ``rare``: one word of rank 3,000 to 5,000 (some hundreds of hits);
- ``common``: one of the 5 commonest words (hundreds of thousands of hits);
- ``two``: a common word (rank 1 to 10) and a middling one (50 to 500);
- ``prefix``: the first 3 letters of a word of rank 10 to 1,000 (the last word is a prefix);
- ``room``: a common word (rank 1 to 20) in one room;
- ``next``: the 2nd to 5th pages of a ``common`` search, each asked with the previous ``next``.

p50 and p99 in milliseconds per kind, and the goal: p99 <= 50 ms. On PostgreSQL the plan of one
query of each kind is shown (``EXPLAIN ANALYZE``: the top nodes and the execution time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from tests.support import run_server

from bench.common import pct, scratch
from daarion_city.config import Settings
from daarion_city.rooms.search import query_words
from daarion_city.storage import search as search_store

SECRET = "bench-secret-0123456789-0123456789-abc"
T0_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
LATIN = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
CYRILLIC = ["б", "в", "г", "д", "ж", "з", "к", "л", "м", "н", "п", "р", "с", "т", "ч", "ш"]
VOWELS_LATIN = ["a", "e", "i", "o", "u"]
VOWELS_CYRILLIC = ["а", "е", "и", "і", "о", "у", "я", "ю", "є", "ї"]
GOAL_MS = 50.0


def vocabulary(seed: int = 25) -> list[str]:
    """5,000 distinct made-up words; every 5th rank Cyrillic."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < 5000:
        cyrillic = len(words) % 5 == 4
        consonants, vowels = (CYRILLIC, VOWELS_CYRILLIC) if cyrillic else (LATIN, VOWELS_LATIN)
        word = "".join(
            rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4))
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_rank(rng: random.Random, size: int) -> int:
    return min(size, int(math.exp(rng.random() * math.log(size + 1)))) - 1


def body(rng: random.Random, vocab: list[str]) -> str:
    return " ".join(vocab[zipf_rank(rng, len(vocab))] for _ in range(rng.randint(6, 17)))


def rooms_of(count: int) -> list[str]:
    return [f"room_bench_{i:02d}" for i in range(count)]


# --- filling ----------------------------------------------------------------------------------
PG_FILL = """
INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username, body, created_at,
                                ordinal)
SELECT 'm_' || lpad(to_hex($3::bigint + g), 12, '0') || substr(md5(g::text), 1, 16),
       ($2::text[])[1 + g % array_length($2::text[], 1)],
       g / array_length($2::text[], 1) + 1, 'u_bench', 'Bench', b.body,
       to_timestamp(($3::bigint + g) / 1000.0), g / array_length($2::text[], 1) + 1
FROM generate_series($4::bigint, $5::bigint) AS g
CROSS JOIN LATERAL (
    SELECT string_agg(($1::text[])[least(array_length($1::text[], 1),
                      floor(exp(random() * ln(array_length($1::text[], 1) + 1)))::int)], ' ')
           AS body
    FROM generate_series(1, 6 + (g * 7) % 12) AS w WHERE g >= 0
) AS b
"""


async def fill_pg(url: str, vocab: list[str], rooms: list[str], messages: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        now = datetime.now(UTC)
        for room in rooms:
            await conn.execute(
                "INSERT INTO city_rooms (id, slug, name, created_at) VALUES ($1, $2, $3, $4)",
                room,
                room.replace("_", "-"),
                room,
                now,
            )
        await conn.execute("DROP INDEX ix_room_messages_search")
        await conn.execute("DROP INDEX ix_room_messages_recent")
        step = 100_000
        for start in range(0, messages, step):
            await conn.execute(
                PG_FILL, vocab, rooms, T0_MS, start, min(messages, start + step) - 1, timeout=3600
            )
        await conn.execute(
            "UPDATE city_rooms SET last_seq = n, last_message_seq = n, message_count = n "
            "FROM (SELECT room_id, max(seq) AS n FROM city_room_messages GROUP BY room_id) c "
            "WHERE c.room_id = city_rooms.id"
        )
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute(
            "CREATE INDEX ix_room_messages_search ON city_room_messages USING gin "
            "(search_words) WHERE NOT deleted",
            timeout=3600,
        )
        await conn.execute(
            "CREATE INDEX ix_room_messages_recent ON city_room_messages (created_at, id)",
            timeout=3600,
        )
        await conn.execute("VACUUM ANALYZE city_room_messages", timeout=3600)
    finally:
        await conn.close()


def fill_sqlite(path: Path, vocab: list[str], rooms: list[str], messages: int) -> None:
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    try:
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        conn.executemany(
            "INSERT INTO city_rooms (id, slug, name, created_at) VALUES (?, ?, ?, ?)",
            [(r, r.replace("_", "-"), r, now) for r in rooms],
        )

        def rows() -> Any:
            for g in range(messages):
                ms = T0_MS + g
                at = datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
                yield (
                    f"m_{ms:012x}{rng.getrandbits(64):016x}",
                    rooms[g % len(rooms)],
                    g // len(rooms) + 1,
                    body(rng, vocab),
                    at.isoformat(sep=" "),
                    g // len(rooms) + 1,
                )

        conn.executemany(
            "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username, body,"
            " created_at, ordinal) VALUES (?, ?, ?, 'u_bench', 'Bench', ?, ?, ?)",
            rows(),
        )
        conn.execute(
            "UPDATE city_rooms SET last_seq = n, last_message_seq = n, message_count = n "
            "FROM (SELECT room_id, max(seq) AS n FROM city_room_messages GROUP BY room_id) c "
            "WHERE c.room_id = city_rooms.id"
        )
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


# --- measuring --------------------------------------------------------------------------------
def queries(kind: str, rng: random.Random, vocab: list[str], rooms: list[str]) -> dict[str, Any]:
    def rank(low: int, high: int) -> str:
        return vocab[rng.randint(low, high) - 1]

    if kind == "rare":
        return {"q": rank(3000, 5000)}
    if kind in ("common", "next"):
        return {"q": rank(1, 5)}
    if kind == "two":
        return {"q": f"{rank(1, 10)} {rank(50, 500)}"}
    if kind == "prefix":
        return {"q": rank(10, 1000)[:3]}
    return {"q": rank(1, 20), "room": rng.choice(rooms)}


KINDS = ("rare", "common", "two", "prefix", "room", "next")


async def measure(
    base_url: str, vocab: list[str], rooms: list[str], count: int
) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for _ in range(20):  # warm-up: connections, caches
            await http.get("/city/search", params=queries("two", rng, vocab, rooms))
        for kind in KINDS:
            times: list[float] = []
            hits: list[int] = []
            for _ in range(count if kind != "next" else max(1, count // 4)):
                params = queries(kind, rng, vocab, rooms)
                pages = 5 if kind == "next" else 1
                for page in range(pages):
                    started = time.perf_counter()
                    r = await http.get("/city/search", params=params)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200, r.text
                    data = r.json()
                    if kind != "next" or page > 0:
                        times.append(elapsed)
                        hits.append(len(data["results"]))
                    if data["next"] is None:
                        break
                    params = {**params, "before": data["next"]}
            out[kind] = {
                "n": len(times),
                "p50_ms": round(statistics.median(times), 2),
                "p99_ms": round(pct(times, 0.99), 2),
                "max_ms": round(max(times), 2),
                "mean_hits": round(statistics.mean(hits), 1),
            }
            print(f"  {kind:7} {out[kind]}", flush=True)
    return out


async def explain(url: str, vocab: list[str], rooms: list[str]) -> dict[str, list[str]]:
    """One query of each kind under EXPLAIN ANALYZE (its top plan lines)."""
    rng = random.Random(5)
    conn = await asyncpg.connect(url)
    plans: dict[str, list[str]] = {}
    try:
        for kind in KINDS[:-1]:
            params = queries(kind, rng, vocab, rooms)
            room = params.get("room")
            stmt = search_store._pg_search(room is not None, False).params(
                match=search_store.ts_query(query_words(params["q"])), room=room, limit=21
            )
            sql = str(
                stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
            )
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS OFF) " + sql)
            lines = [r[0] for r in rows]
            plans[kind] = [params["q"], *lines[:6], lines[-1]]
    finally:
        await conn.close()
    return plans


@contextlib.asynccontextmanager
async def database(backend: str) -> AsyncIterator[str]:
    if backend == "postgresql":
        async with scratch("search") as space:
            yield space.database_url
        return
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'city.sqlite3'}"


async def run(backend: str, messages: int, room_count: int, count: int) -> dict[str, Any]:
    vocab, rooms = vocabulary(), rooms_of(room_count)
    async with database(backend) as url:
        settings = Settings(
            database_url=url,
            city_jwt_secret=SECRET,
            city_search_rate=1e6,
            city_search_burst=1_000_000,
            city_search_timeout=10.0,
            city_data_dir=Path(tempfile.gettempdir()) / "bench-search-data",
        )
        async with run_server(settings, ["city"]) as server:
            started = time.perf_counter()
            if backend == "postgresql":
                await fill_pg(url, vocab, rooms, messages)
            else:
                path = Path(sa.engine.make_url(url).database or "")
                await asyncio.to_thread(fill_sqlite, path, vocab, rooms, messages)
            fill_s = round(time.perf_counter() - started, 1)
            print(f"{backend}: {messages:,} messages written and indexed in {fill_s} s", flush=True)
            results = await measure(server.base_url, vocab, rooms, count)
            plans = await explain(url, vocab, rooms) if backend == "postgresql" else {}
    for kind, lines in plans.items():
        print(f"  plan {kind}: " + "\n      ".join(lines))
    worst = max(r["p99_ms"] for r in results.values())
    verdict = "met" if worst <= GOAL_MS else "NOT met"
    print(f"  worst p99 {worst} ms: goal p99 <= {GOAL_MS} ms {verdict}")
    return {"backend": backend, "messages": messages, "fill_s": fill_s, "kinds": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="postgresql,sqlite")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    for backend in args.backend.split(","):
        asyncio.run(run(backend, args.messages, args.rooms, args.queries))


if __name__ == "__main__":
    main()
