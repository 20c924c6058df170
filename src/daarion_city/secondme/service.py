"""Second Me policy: one session per user, one invocation at a time, context from recent turns,
accounting, and loud failures.

An invocation:
1. takes the user's lease (``busy_until``; a second concurrent invoke gets 409 ``busy``),
   checks the daily token budget (429 when spent) and stores the prompt (so it stays in the
   history whatever happens), reading the rows of the context (``asks.Asks.begin``);
2. builds the context (``context.invoke_context``: the system prompt, the memory, recalled
   turns, the last ``SECONDME_CONTEXT_MESSAGES`` answered turns, the new prompt once);
3. calls the provider (timed: ``latency_ms`` is the model call), and
4. on success stores the answer with its token count and where the count came from, and adds
   one interaction and its tokens to the session; on failure marks the prompt failed, stores no
   answer, and raises the provider's typed error (502/503/504, or 422 ``prompt_too_long`` when
   the prompt cannot fit the model's window; the provider drops older turns to fit first).

Circuit breakers (``breaker.py``): one per user and one for the provider that opens only when
failures come from several users; failures the input caused are never counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from daarion_city.config import Settings
from daarion_city.core.clock import iso
from daarion_city.core.errors import CityError
from daarion_city.core.provided import Key
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.ratelimit import MemoryRateLimiter, RateLimiter
from daarion_city.secondme.asks import Asked, Asks
from daarion_city.secondme.breaker import Breakers, CircuitOpen
from daarion_city.secondme.context import Built, invoke_context
from daarion_city.secondme.memory import Memories
from daarion_city.secondme.providers.base import (
    AgentProvider,
    AgentRefused,
    AgentTimeout,
    AgentUnavailable,
    Done,
    estimate_tokens,
)
from daarion_city.secondme.schemas import CatchupSource, message_wire
from daarion_city.storage import secondme as store
from daarion_city.storage.database import Database

HISTORY_IN_ANSWER = 10


_AGENT_FAULTS = (AgentUnavailable, AgentTimeout)  # counted by the breakers (AgentRefused is not)


@dataclass(frozen=True, slots=True)
class Answer:
    response: str
    tokens_used: int
    latency_ms: int


class SecondMeService:
    def __init__(
        self,
        db: Database,
        provider: AgentProvider,
        settings: Settings,
        limiter: RateLimiter | None = None,
        tasks: TaskSet | None = None,
        catchup_source: CatchupSource | None = None,
    ) -> None:
        self.catchup_source = catchup_source
        self.db = db
        self.tasks = tasks or TaskSet("secondme")
        self.memories = Memories(db, provider, settings, self.tasks)
        self.asks = Asks(db, settings, self.memories)
        self.limiter = limiter or MemoryRateLimiter()
        self.provider = provider
        self.settings = settings
        self.breaker = Breakers(
            failures=settings.secondme_breaker_failures,
            cooldown=settings.secondme_breaker_cooldown,
            users=settings.secondme_breaker_users,
        )

    async def close(self) -> None:
        await self.tasks.close()
        await self.provider.close()

    # --- reads --------------------------------------------------------------------------------
    async def history(self, user: Principal, limit: int) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await store.recent(conn, user.user_id, limit)
        return [message_wire(r) for r in rows]

    async def profile(self, user: Principal) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = await store.get_session(conn, user.user_id)
        return {
            "user_id": user.user_id,
            "agent_id": row.agent_id if row else self.settings.secondme_agent_id,
            "total_interactions": row.total_interactions if row else 0,
            "total_tokens": row.total_tokens if row else 0,
            "last_interaction": iso(row.last_interaction) if row and row.last_interaction else None,
            "provider": self.provider.name,
            "model": self.provider.model,
        }

    async def clear(self, user: Principal) -> int:
        async with self.db.begin() as conn:
            return await store.clear(conn, user.user_id)

    # --- invocation ---------------------------------------------------------------------------
    async def invoke(self, user: Principal, prompt: str) -> dict[str, Any]:
        answer: Answer | None = None
        async for item in self.invoke_stream(user, prompt):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return {
            "response": answer.response,
            "tokens_used": answer.tokens_used,
            "latency_ms": answer.latency_ms,
            "history": await self.history(user, HISTORY_IN_ANSWER),
        }

    async def invoke_stream(
        self,
        user: Principal,
        prompt: str,
        build: Callable[[Asked], Built] | None = None,
        weight: int = 0,
    ) -> AsyncIterator[str | Answer]:
        """Text deltas, then one :class:`Answer` once the answer is stored. ``build`` (a
        catch-up's) gives the context instead of the memory, recall and recent turns; ``weight``
        is the tokens it adds to what the call may cost."""
        s = self.settings
        # The user's token bucket is charged what this ask may cost at most (its prompt and the
        # longest answer), before anything is stored or the model is called.
        cost = estimate_tokens(prompt) + weight + s.secondme_max_tokens
        cost = min(s.secondme_token_burst, cost)
        await self.limiter.hit(
            f"secondme:{user.user_id}",
            rate=s.secondme_token_rate,
            burst=s.secondme_token_burst,
            cost=cost,
        )
        context = await self.asks.begin(user, prompt, recall=build is None)
        prompt_id = context.prompt_id
        finished = False
        who = user.user_id
        try:
            built = (
                build(context)
                if build
                else invoke_context(
                    self.settings,
                    self.provider.window,
                    context.memory,
                    context.recent,
                    context.recalled,
                    prompt,
                )
            )
            self.breaker.before_call(who)
            started = time.perf_counter()
            done: Done | None = None
            async for item in self.provider.stream(built.messages, context.ctx):
                if isinstance(item, Done):
                    done = item
                else:
                    yield item
            if done is None:
                raise AgentUnavailable("the agent's answer ended without a result")
            latency_ms = round((time.perf_counter() - started) * 1000)
            self.breaker.success(who)
            await self.asks.answered(user, context, done, latency_ms, built)
            finished = True
            self.memories.after_answer(who)
            yield Answer(done.text, done.tokens_used, latency_ms)
        except CityError as exc:
            if isinstance(exc, AgentRefused) or not isinstance(exc, _AGENT_FAULTS):
                self.breaker.release(who)  # the input's fault (or prompt_too_long, agent_not_
                # configured), not the agent's: not counted
            elif not isinstance(exc, CircuitOpen):
                self.breaker.failure(who)
            await self.asks.fail(user, prompt_id, exc.code)
            finished = True
            raise
        finally:
            if not finished:  # the client left mid-answer
                self.breaker.release(who)
                await self.asks.fail(user, prompt_id, "cancelled")


SECONDME: Key[SecondMeService] = Key("secondme")
