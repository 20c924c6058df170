"""The ``agents-core`` provider: ``POST {AGENTS_SERVICE_URL}/agents/invoke`` over one shared
``httpx.AsyncClient``; the answer arrives whole and is streamed as one delta.

A 400, 413 or 422 from the agent is the prompt's fault (``AgentRefused``: 502 for the user, not
counted by the circuit breaker); any other failure is the agent's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from daarion_city.secondme.providers.base import (
    AgentRefused,
    AgentTimeout,
    AgentUnavailable,
    ChatMessage,
    Done,
    InvokeContext,
    estimate_tokens,
)

INPUT_STATUSES = frozenset({400, 413, 422})


class AgentsCoreProvider:
    name = "agents-core"
    model = None  # the agent chooses
    window = None  # the agent fits its own context

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/agents/invoke"
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def stream(
        self, messages: list[ChatMessage], ctx: InvokeContext
    ) -> AsyncIterator[str | Done]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        *earlier, prompt = [m for m in messages if m.role != "system"]
        context: dict[str, object] = {
            "history": [{"role": m.role, "content": m.content} for m in earlier]
        }
        if system:  # the instructions and the user's memory (secondme/context.py)
            context["system"] = system
        body = {
            "agent_id": ctx.agent_id,
            "message_text": prompt.content,
            "user_id": ctx.user_id,
            "channel_id": "secondme",
            "context": context,
        }
        try:
            response = await self.client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise AgentTimeout("agents-core did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise AgentUnavailable(f"agents-core is unreachable: {type(exc).__name__}") from exc
        if response.status_code in INPUT_STATUSES:
            raise AgentRefused(
                f"agents-core refused this prompt: HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        if response.status_code != 200:
            raise AgentUnavailable(f"agents-core answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise AgentUnavailable("agents-core answered something that is not JSON") from exc
        text = data.get("response_text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise AgentUnavailable("agents-core answered without a response_text")
        tokens = data.get("tokens_used")
        yield text
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            yield Done(text, tokens, "provider")
        else:
            yield Done(text, estimate_tokens(prompt.content) + estimate_tokens(text), "estimate")

    async def close(self) -> None:
        await self.client.aclose()
