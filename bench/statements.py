"""Client CPU per statement: one built per call against one built once (PostgreSQL).

    .venv/bin/python -m bench.statements

The message path's statements are module constants (storage/messages.py, storage/feed.py); this
shows why, with the same UPDATE the commit of every post runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import scratch
from daarion_city.storage import messages as store
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate
from daarion_city.storage.tables import rooms

N = 2000


async def main() -> None:
    async with scratch("statements") as space:
        db = Database(space.database_url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await migrate(db)
            async with db.begin() as conn:

                def built() -> Awaitable[Any]:
                    return conn.execute(
                        rooms.update()
                        .where(rooms.c.id == "room_city_general")
                        .values(last_seq=rooms.c.last_seq + 1)
                        .returning(rooms.c.last_seq)
                    )

                def constant() -> Awaitable[Any]:
                    return store.reserve_seqs(conn, "room_city_general", 1)

                cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                    ("built per call", built),
                    ("built once", constant),
                ]
                for label, run in cases:
                    for _ in range(200):
                        await run()
                    started = time.process_time()
                    for _ in range(N):
                        await run()
                    per = (time.process_time() - started) / N * 1e6
                    print(f"{label}: {per:.0f} µs of client CPU per statement")
        finally:
            await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
