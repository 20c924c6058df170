"""Second Me's memory of a user (SPEC section 5b): ``about`` in their own words, the agent's
rolling ``summary`` of the turns that fell out of the context, and recall of older turns.

- ``about`` is set by ``PUT /secondme/memory``; ``forget`` empties ``about`` and ``summary`` and
  moves the summary's mark to the newest turn, so the turns before it are not summarised again.
- A turn falls out of the context once ``SECONDME_CONTEXT_MESSAGES`` newer answered turns exist.
  After each answer, if answered turns fell out that the summary does not cover, one model call
  (in the background, never before the answer) folds the oldest of them (at most
  ``SUMMARY_TURNS``) into the summary; the summary and the newest turn it covers are stored
  together. A failed refresh is logged and tried again after the next answer.
- Recall: the user's answered turns older than the recent ones that share words with the prompt,
  best match first, at most ``SECONDME_RECALL_TURNS`` (``storage/secondme_memory.search``). Its
  words are the prompt's of 3 characters or more, the rarest ``RECALL_WORDS`` of them, leaving
  out any held by more than ``COMMON_TURNS`` turns (as stop words: they tell no turn apart, and
  ranking all their matches would cost more than the invoke; ``word_counts``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.config import Settings
from daarion_city.core.clock import iso, utcnow
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.secondme.context import Turn, summary_messages
from daarion_city.secondme.providers.base import AgentProvider, InvokeContext, complete
from daarion_city.secondme.schemas import message_wire
from daarion_city.storage import secondme as turns_store
from daarion_city.storage import secondme_memory as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

SUMMARY_TURNS = 40  # the most turns one refresh folds in
# Recall searches by the prompt's rarest words, at most RECALL_WORDS of them, and leaves out a
# word expected in more than RECALL_CANDIDATES of the user's turns: like a stop word it tells no
# turn apart, and ranking all its matches would cost more than the rest of the invoke.
RECALL_WORDS = 4
RECALL_CANDIDATES = 300
TURN_COUNTS = 100_000  # users whose turn count is kept in memory
SHARES_MAX_AGE = 60.0  # seconds PostgreSQL's word statistics are kept (they change by ANALYZE)


def memory_wire(row: Any) -> dict[str, Any]:
    return {
        "about": row.about if row else "",
        "summary": row.summary if row else "",
        "updated_at": iso(row.updated_at) if row and row.updated_at else None,
    }


def turn_of(row: Any) -> Turn:
    return Turn(str(row.id), row.role, row.content)


class Memories:
    def __init__(
        self, db: Database, provider: AgentProvider, settings: Settings, tasks: TaskSet
    ) -> None:
        self.db = db
        self.provider = provider
        self.settings = settings
        self.tasks = tasks
        self._refreshing: set[str] = set()
        self._common: tuple[float, dict[str, float]] = (-SHARES_MAX_AGE, {})
        # How many turns each user has, about (recall's stop-word cut): told by each ask's
        # session row (``note_turns``), read from the session when unknown.
        self._turns: dict[str, int] = {}

    async def get(self, user: Principal) -> dict[str, Any]:
        async with self.db.read() as conn:
            return memory_wire(await store.get_memory(conn, user.user_id))

    async def set_about(self, user: Principal, about: str) -> dict[str, Any]:
        async with self.db.begin() as conn:
            await store.save_memory(conn, user.user_id, utcnow(), about=about)
            return memory_wire(await store.get_memory(conn, user.user_id))

    async def forget(self, user: Principal) -> dict[str, Any]:
        async with self.db.begin() as conn:
            newest = await store.newest_pos(conn, user.user_id)
            await store.save_memory(
                conn, user.user_id, utcnow(), about="", summary="", summarized_pos=newest
            )
            return memory_wire(await store.get_memory(conn, user.user_id))

    async def search(self, user: Principal, q: str, limit: int) -> list[dict[str, Any]]:
        """The caller's turns holding every word of ``q`` (words of 2 characters or more; none:
        nothing found), newest first."""
        words = store.words_of(q)
        async with self.db.read() as conn:
            rows = await store.search(conn, user.user_id, words, limit=limit)
        return [message_wire(r) for r in rows]

    def start_recall(self, user_id: str, prompt: str) -> asyncio.Task[list[Turn]]:
        """Recall, on a connection of its own while the invoke's transaction runs; ``recalled``
        takes its answer."""
        return self.tasks.spawn(self._recall(user_id, prompt), name=f"recall-{user_id}")

    def note_turns(self, user_id: str, interactions: int) -> int:
        """The user's turns, about (two per interaction), from their session's counter."""
        if len(self._turns) >= TURN_COUNTS:
            self._turns.clear()  # bounded; refilled by the next asks
        turns = self._turns[user_id] = 2 * int(interactions) + 2
        return turns

    def recalled(self, found: list[Turn], recent: list[Turn]) -> list[Turn]:
        """The recalled turns, best first, none of them a recent one."""
        shown = {t.id for t in recent}
        return [t for t in found if t.id not in shown][: self.settings.secondme_recall_turns]

    async def _recall(self, user_id: str, prompt: str) -> list[Turn]:
        """The turns that match the prompt best (recent ones among them: ``recalled`` drops
        them)."""
        s = self.settings
        if not s.secondme_recall_turns:
            return []
        words = store.words_of(prompt, shortest=3)
        async with self.db.read() as conn:
            turns = self._turns.get(user_id)
            if turns is None:
                session = await turns_store.get_session(conn, user_id)
                turns = self.note_turns(user_id, session.total_interactions if session else 0)
            shares = await self._shares(conn, words)
            telling = [w for w in words if shares.get(w, 0.0) * turns <= RECALL_CANDIDATES]
            telling.sort(key=lambda w: shares.get(w, 0.0))  # the rarest first
            limit = s.secondme_recall_turns + s.secondme_context_messages
            rows = await store.search(
                conn, user_id, telling[:RECALL_WORDS], limit=limit, any_word=True
            )
        return [turn_of(r) for r in rows]

    async def _shares(self, conn: AsyncConnection, words: list[str]) -> dict[str, float]:
        """The words' shares of all turns (PostgreSQL's statistics, read once a minute)."""
        if self.db.is_sqlite:
            return await store.word_shares(conn, words)
        read_at, shares = self._common
        if time.monotonic() - read_at > SHARES_MAX_AGE:
            shares = await store.common_shares(conn)
            self._common = (time.monotonic(), shares)
        return {w: shares[w] for w in words if w in shares}

    # --- the summary --------------------------------------------------------------------------
    def after_answer(self, user_id: str) -> None:
        """Fold the turns that fell out of the context into the summary, in the background."""
        if user_id not in self._refreshing:
            self._refreshing.add(user_id)
            self.tasks.spawn(self._refresh_quietly(user_id), name=f"secondme-summary-{user_id}")

    async def _refresh_quietly(self, user_id: str) -> None:
        try:
            await self.refresh(user_id)
        except Exception:
            log.warning("the summary of %s was not refreshed", user_id, exc_info=True)
        finally:
            self._refreshing.discard(user_id)

    async def refresh(self, user_id: str) -> bool:
        """One model call if answered turns fell out of the context that the summary does not
        cover yet; True when the summary changed."""
        keep = self.settings.secondme_context_messages
        async with self.db.read() as conn:
            row = await store.get_memory(conn, user_id)
            covered = int(row.summarized_pos) if row else 0
            boundary = await store.context_boundary(conn, user_id, keep)
            if boundary is None:
                return False
            fallen = await store.turns_between(conn, user_id, covered, boundary, SUMMARY_TURNS)
        if not fallen:
            return False
        messages = summary_messages(row.summary if row else "", [turn_of(r) for r in fallen])
        done = await complete(
            self.provider, messages, InvokeContext(user_id, self.settings.secondme_agent_id)
        )
        async with self.db.begin() as conn:
            await turns_store.charge(conn, user_id, tokens=done.tokens_used, now=utcnow())
            return await store.advance_summary(
                conn,
                user_id,
                covered=covered,
                summary=done.text.strip(),
                through=int(fallen[-1].pos),
                now=utcnow(),
            )
