"""The stored side of one ask (``SecondMeService.invoke_stream``): the lease, the budget and the
prompt before the model call, with the rows the context is built from; the answer or the
failure after it.

Before the call, on PostgreSQL, one statement takes the lease, stores the prompt and reads the
memory and the recent turns (``storage/secondme.take_and_ask``, atomic by itself on an
autocommit connection, committed without waiting for the disk). When that statement writes
nothing (SQLite, a user's first ask, a session busy or out of budget) one transaction does it
all and tells which: 409 ``busy`` or 429 with the time the day's budget comes back. Recall
runs beside them on a connection of its own (if it fails, the ask goes on without it). Once the
lease may be held (the statement may have committed before it failed), anything that fails (or
a client that leaves) before the context is complete marks the prompt failed and gives the lease
back, if the prompt was stored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.config import Settings
from daarion_city.core.clock import utcnow
from daarion_city.core.errors import Conflict, RateLimited
from daarion_city.core.ids import new_id
from daarion_city.identity.principal import Principal
from daarion_city.secondme.context import Built, Turn
from daarion_city.secondme.memory import Memories, turn_of
from daarion_city.secondme.providers.base import Done, InvokeContext
from daarion_city.storage import secondme as store
from daarion_city.storage import secondme_memory as memory_store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Asked:
    """An ask whose prompt is stored and whose lease is held, with its context's rows."""

    prompt_id: str
    session_id: str
    ctx: InvokeContext
    memory: Any  # what has the memory's about and summary (its row), or None
    recent: list[Turn]
    recalled: list[Turn]


class Asks:
    def __init__(self, db: Database, settings: Settings, memories: Memories) -> None:
        self.db = db
        self.settings = settings
        self.memories = memories

    async def begin(self, user: Principal, prompt: str, *, recall: bool) -> Asked:
        s, now = self.settings, utcnow()
        recalling = self.memories.start_recall(user.user_id, prompt) if recall else None
        asked: dict[str, Any] = {"id": new_id("smm"), "user_id": user.user_id, "role": "user"}
        asked |= {"content": prompt, "status": "pending", "created_at": now}
        leased = False
        try:
            session = None
            if not self.db.is_sqlite:
                leased = True  # perhaps, if it fails: its statement may commit before failing
                async with self.db.autocommit() as conn:
                    session = await store.take_and_ask(
                        conn,
                        until=now + LEASE,
                        daily_tokens=s.secondme_daily_tokens,
                        prompt=asked,
                        recent=s.secondme_context_messages,
                    )
                leased = session is not None
            if session is not None:
                self.memories.note_turns(user.user_id, session.total_interactions)
                memory = session if session.has_memory else None
                recent = [Turn(*turn) for turn in session.recent_turns]
            else:
                session, turns, memory = await self._take(user, asked, now)
                leased = True
                recent = [turn_of(r) for r in turns]
            found = await self._recalled(recalling)
        except BaseException as exc:
            if recalling:
                recalling.cancel()
            if leased:
                cancelled = isinstance(exc, asyncio.CancelledError)
                try:
                    await self.fail(user, asked["id"], "cancelled" if cancelled else "unavailable")
                except Exception:  # the database is away: the lease runs out by itself
                    log.warning("the failed ask's lease was not given back", exc_info=True)
            raise
        return Asked(
            prompt_id=asked["id"],
            session_id=str(session.id),
            ctx=InvokeContext(user_id=user.user_id, agent_id=str(session.agent_id)),
            memory=memory,
            recent=recent,
            recalled=self.memories.recalled(found, recent),
        )

    @staticmethod
    async def _recalled(recalling: asyncio.Task[list[Turn]] | None) -> list[Turn]:
        """What recall found; nothing when it failed (the ask goes on without it)."""
        if recalling is None:
            return []
        try:
            return await recalling
        except Exception:
            log.warning("recall failed; the ask goes on without recalled turns", exc_info=True)
            return []

    async def _take(
        self, user: Principal, asked: dict[str, Any], now: datetime
    ) -> tuple[Any, list[Any], Any]:
        """One transaction: the session (created on first use), its lease and budget, the
        context's rows, the stored prompt."""
        s = self.settings
        async with self.db.begin() as conn:
            session = await store.take_session(
                conn,
                session_id=new_id("sms"),
                user_id=user.user_id,
                agent_id=s.secondme_agent_id,
                now=now,
                until=now + LEASE,
            )
            if session is None:
                raise Conflict("Second Me is still answering your previous prompt", code="busy")
            if store.spent_today(session, now) >= s.secondme_daily_tokens:
                day = now.replace(hour=0, minute=0, second=0, microsecond=0)
                retry = (day + timedelta(days=1) - now).total_seconds()
                budget = s.secondme_daily_tokens
                raise RateLimited(retry, f"today's Second Me budget of {budget} tokens is spent")
            turns, memory = await self._reads(conn, user.user_id)
            await store.add_message(conn, session_id=session.id, **asked)
        return session, turns, memory

    async def _reads(self, conn: AsyncConnection, user_id: str) -> tuple[list[Any], Any]:
        """The recent answered turns (oldest first) and the memory row of the user."""
        n = self.settings.secondme_context_messages
        turns = await store.recent(conn, user_id, n, answered_only=True)
        return turns, await memory_store.get_memory(conn, user_id)

    async def answered(
        self, user: Principal, asked: Asked, done: Done, latency_ms: int, built: Built
    ) -> None:
        """The answer stored beside its prompt, counted, and the lease given back."""
        now = utcnow()
        async with self.db.begin() as conn:
            await store.set_message_status(conn, user.user_id, asked.prompt_id, "ok", None)
            await store.add_message(
                conn,
                id=new_id("smm"),
                session_id=asked.session_id,
                user_id=user.user_id,
                role="assistant",
                content=done.text,
                status="ok",
                tokens_used=done.tokens_used,
                token_source=done.token_source,
                latency_ms=latency_ms,
                created_at=now,
                context=built.chosen,
            )
            await store.record_answer(conn, user.user_id, tokens=done.tokens_used, now=now)

    async def fail(self, user: Principal, prompt_id: str, code: str) -> None:
        """The prompt marked failed (``code``), the lease given back: only if the prompt was
        stored (the lease was taken with it, in the same statement or transaction)."""
        async with self.db.begin() as conn:
            if await store.set_message_status(conn, user.user_id, prompt_id, "failed", code):
                await store.release_lease(conn, user.user_id)
