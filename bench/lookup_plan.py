"""The retry lookup as the room grows: the old ``(author, client_msg_id) IN (...)`` form against
the per-key form of ``storage/messages.find_by_client_msg_ids``, each a prepared statement kept
across the room's growth, as a pooled connection keeps it (PostgreSQL).

    .venv/bin/python -m bench.lookup_plan

Prints, per room size, the time of one lookup of 25 keys with each form.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench.common import scratch
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate

KEYS = 25
ROOM = "room_city_science"
COLUMNS = "id, room_id, seq, author_user_id, username, body, client_msg_id, created_at"
OLD = (
    f"SELECT {COLUMNS} FROM city_room_messages WHERE room_id = $1 AND"
    " (author_user_id, client_msg_id) IN ("
    + ", ".join(f"(${2 * i + 2}, ${2 * i + 3})" for i in range(KEYS))
    + ")"
)
NEW = " UNION ALL ".join(
    f"SELECT {COLUMNS} FROM city_room_messages WHERE room_id = $1"
    f" AND author_user_id = ${2 * i + 2} AND client_msg_id = ${2 * i + 3}"
    for i in range(KEYS)
)
GROWTH = [0, 20_000, 40_000, 60_000, 80_000, 100_000]  # rows added before each step


async def main() -> None:
    async with scratch("lookup") as space:
        db = Database(space.database_url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await migrate(db)
        finally:
            await db.dispose()
        conn = await asyncpg.connect(space.database_url)
        try:
            old, new = await conn.prepare(OLD), await conn.prepare(NEW)
            size = 0
            for step, grow in enumerate(GROWTH):
                await conn.execute(
                    f"INSERT INTO city_room_messages ({COLUMNS}) SELECT 'mb' || g, $1, g,"
                    " 'u_' || (g % 50), 'U', 'b', 'c' || g, now()"
                    " FROM generate_series($2::bigint, $3::bigint) g",
                    ROOM,
                    size + 1,
                    size + grow,
                )
                size += grow
                args = [ROOM] + [v for i in range(KEYS) for v in (f"u_{i}", f"k{step}-{i}")]
                timings = []
                for statement in (old, new):
                    started = time.perf_counter()
                    await statement.fetch(*args)
                    timings.append((time.perf_counter() - started) * 1000)
                print(
                    f"{size:>8,} messages: IN form {timings[0]:8.2f} ms,"
                    f" per-key form {timings[1]:6.2f} ms",
                    flush=True,
                )
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
