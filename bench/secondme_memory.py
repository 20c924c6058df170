"""Second Me's memory at scale (issue 23): search and recall over many stored turns.

    .venv/bin/python -m bench.secondme_memory [--turns 1000000] [--users 10] [--queries 200]

One ``daarion-city serve`` on a scratch PostgreSQL database (migrated by the service, so the
index is the migration's), then ``--turns`` Second Me turns spread over ``--users`` users written
straight into it with ``COPY`` and ``ANALYZE``d. The turns' words follow Zipf's law (s = 1.07)
over a vocabulary of 20,000 made-up words, half Latin and half Cyrillic, 6 to 24 words a turn,
so some words are in a third of a user's turns and most in a handful.

- ``search``: ``GET /secondme/search?q=...&limit=20`` as one user, for a word of each frequency
  class (common: ranks 1-10; middling: 100-300; rare: 3,000-10,000), two middling words, and a
  common and a rare word together: p50/p99 of each, end to end over HTTP, with
  ``GET /healthz`` from the same client beside it (the floor of any request here).
- ``recall``: what an invoke adds before it calls the model, ``storage/secondme_memory.search``
  with ``any_word`` (the prompt's words, best match first, 3 turns, older than the recent
  turns), for prompts of 6 to 12 words drawn like the turns, on the service's own ``Database``.

Goal (issue 23): search p99 <= 20 ms at 1,000,000 stored turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
from tests.cluster import Instance

from bench.common import SECRET, UNLIMITED, pct, scratch
from bench.presence import token
from daarion_city.config import Settings
from daarion_city.core.tasks import TaskSet
from daarion_city.secondme.memory import Memories
from daarion_city.storage import secondme_memory as store
from daarion_city.storage.database import Database

VOCABULARY = 20_000
LATIN = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "so", "da", "fu"]
CYRILLIC = ["ба", "ві", "го", "ду", "же", "зо", "ки", "ля", "мо", "ну", "пі", "ро"]


def vocabulary(rng: random.Random) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        syllables = LATIN if len(words) % 2 == 0 else CYRILLIC
        words["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))] = None
    return list(words)


class Zipf:
    def __init__(self, words: list[str], s: float, rng: random.Random) -> None:
        self.words = words
        self.rng = rng
        weights = [1 / (rank**s) for rank in range(1, len(words) + 1)]
        total = 0.0
        self.cumulative = []
        for w in weights:
            total += w
            self.cumulative.append(total)

    def sentence(self, low: int, high: int) -> str:
        k = self.rng.randint(low, high)
        return " ".join(self.rng.choices(self.words, cum_weights=self.cumulative, k=k))


async def load(url: str, users: list[str], turns: int, zipf: Zipf) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(url, timeout=30)
    now = datetime.now(UTC)
    try:
        for user in users:
            await conn.execute(  # the interactions those turns were
                "INSERT INTO secondme_sessions (id, user_id, agent_id, created_at, updated_at,"
                " total_interactions) VALUES ($1, $2, 'ag', $3, $3, $4)",
                f"sms_{user}",
                user,
                now,
                turns // len(users) // 2,
            )
        chunk = 50_000
        for start in range(0, turns, chunk):
            rows = [
                (
                    f"smm_{i}",
                    f"sms_{users[i % len(users)]}",
                    users[i % len(users)],
                    "user" if (i // len(users)) % 2 == 0 else "assistant",
                    zipf.sentence(6, 24),
                    "ok",
                    now,
                )
                for i in range(start, min(turns, start + chunk))
            ]
            await conn.copy_records_to_table(
                "secondme_messages",
                records=rows,
                columns=["id", "session_id", "user_id", "role", "content", "status", "created_at"],
            )
        await conn.execute("VACUUM (ANALYZE) secondme_messages")
    finally:
        await conn.close()
    return time.perf_counter() - started


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(pct(values, 0.99), 2),
        "max_ms": round(max(values), 2),
    }


async def search(city: str, user: str, words: list[str], n: int) -> dict[str, Any]:
    rng = random.Random(11)
    classes = {
        "common": lambda: rng.choice(words[:10]),
        "middling": lambda: rng.choice(words[100:300]),
        "rare": lambda: rng.choice(words[3000:10000]),
        "two middling": lambda: f"{rng.choice(words[100:300])} {rng.choice(words[100:300])}",
        "common and rare": lambda: f"{rng.choice(words[:10])} {rng.choice(words[3000:10000])}",
    }
    headers = {"authorization": f"Bearer {token(user)}"}
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=city, timeout=30) as client:
        for _ in range(20):  # warm
            await client.get("/secondme/search", params={"q": words[0]}, headers=headers)
        floor: list[float] = []
        for name, draw in classes.items():
            took: list[float] = []
            found: list[int] = []
            for _ in range(n):
                q = draw()
                t = time.perf_counter()
                r = await client.get("/secondme/search", params={"q": q}, headers=headers)
                took.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
                found.append(len(r.json()))
                t = time.perf_counter()
                await client.get("/healthz")
                floor.append((time.perf_counter() - t) * 1000)
            results[name] = {**summary(took), "found_p50": statistics.median(found)}
        results["healthz"] = summary(floor)
    return results


async def recall(url: str, user: str, zipf: Zipf, n: int) -> dict[str, Any]:
    """``Memories.start_recall`` as an invoke runs it (the statistics, read once a minute, then
    the search), timed whole; and the read of the statistics alone."""
    db = Database(url.replace("postgresql://", "postgresql+asyncpg://"))
    memories = Memories(db, cast(Any, None), Settings(), TaskSet("bench"))
    whole: list[float] = []
    counts: list[float] = []
    found: list[int] = []
    try:
        for i in range(n + 20):
            prompt = zipf.sentence(6, 12)
            async with db.read() as conn:
                t = time.perf_counter()
                await store.common_shares(conn)
                c = time.perf_counter()
            turns = await memories.start_recall(user, prompt)
            w = time.perf_counter()
            if i >= 20:
                counts.append((c - t) * 1000)
                whole.append((w - c) * 1000)
                found.append(len(turns))
    finally:
        await db.dispose()
    return {
        **summary(whole),
        "statistics_read": summary(counts),
        "found_p50": statistics.median(found),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(os.environ.get("BENCH_WORKDIR", "bench/out"))
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    rng = random.Random(7)
    words = vocabulary(rng)
    zipf = Zipf(words, 1.07, rng)
    users = [f"u_bench{i}" for i in range(args.users)]
    async with scratch("secondme_memory") as space:
        city = Instance(
            "bench-secondme-memory",
            {
                "DATABASE_URL": space.database_url,
                "REDIS_URL": "",
                "CITY_JWT_SECRET": SECRET,
                "CITY_DATA_DIR": str(workdir),
                "LOG_LEVEL": "warning",
                **UNLIMITED,
            },
            workdir,
        )
        await asyncio.to_thread(city.start)
        try:
            took = await load(space.database_url, users, args.turns, zipf)
            print(f"{args.turns:,} turns of {args.users} users written in {took:.0f} s", flush=True)
            result = {
                "turns": args.turns,
                "users": args.users,
                "search": await search(city.base_url, users[0], words, args.queries),
                "recall": await recall(space.database_url, users[0], zipf, args.queries),
            }
        finally:
            await asyncio.to_thread(city.stop)
    print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
