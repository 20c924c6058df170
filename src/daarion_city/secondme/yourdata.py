"""What Second Me keeps of a user, for ``GET /city/me/export`` and ``DELETE /city/me`` (SPEC 11):
the history (every turn, with what each answer's context held), the memory (``about`` and the
agent's ``summary``) and the session's counters. Registered with the identity's ``YourData``
by ``app/wiring.py``."""

from __future__ import annotations

from typing import Any

from daarion_city.core.clock import iso
from daarion_city.secondme.memory import memory_wire
from daarion_city.secondme.schemas import message_wire
from daarion_city.storage import secondme as store
from daarion_city.storage import secondme_memory as memory_store
from daarion_city.storage.database import Database


class SecondMeData:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def export(self, user_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            turns = await store.all_turns(conn, user_id)
            memory = await memory_store.get_memory(conn, user_id)
            session = await store.get_session(conn, user_id)
        return {
            "history": [{**message_wire(t), "status": t.status} for t in turns],
            "memory": memory_wire(memory),
            "session": None
            if session is None
            else {
                "agent_id": session.agent_id,
                "created_at": iso(session.created_at),
                "total_interactions": session.total_interactions,
                "total_tokens": session.total_tokens,
            },
        }

    async def erase(self, user_id: str) -> None:
        async with self.db.begin() as conn:
            await store.erase(conn, user_id)
