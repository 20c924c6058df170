"""The ``openai`` provider: the official SDK against any OpenAI-compatible server (Ollama, vLLM,
llama.cpp, LM Studio, OpenAI).

The answer is always streamed from upstream (also for the plain JSON route), so the timeouts are
meaningful: ``connect``, ``first token`` (the wait until the first chunk) and ``idle`` (the
longest gap between chunks). A failure before the first chunk is retried once; after it, never
(the user would see the answer twice).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from daarion_city.secondme.providers.base import (
    AgentTimeout,
    AgentUnavailable,
    ChatMessage,
    Done,
    InvokeContext,
    estimate_tokens,
)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's error root: the SDK uses httpx, or its fork httpx2 (openai 3)."""
    found: list[type[BaseException]] = [OSError]
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_MID_ANSWER_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, *_transport_errors())


def api_base(url: str) -> str:
    """The server root or its ``/v1``; the SDK wants the latter."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str,
        max_tokens: int,
        temperature: float,
        connect_timeout: float,
        first_token_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.model = model or "default"
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.client = AsyncOpenAI(
            base_url=api_base(base_url),
            api_key=api_key or "unused",
            max_retries=0,
            timeout=openai.Timeout(idle_timeout, connect=connect_timeout),
        )

    async def _open(self, messages: list[ChatMessage]) -> tuple[AsyncIterator[Any], Any]:
        """Start the upstream stream and wait for its first chunk (retried once)."""
        payload = [{"role": m.role, "content": m.content} for m in messages]
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self.first_token_timeout):
                    created = await self.client.chat.completions.create(
                        model=self.model,
                        messages=payload,  # type: ignore[arg-type]
                        stream=True,
                        max_tokens=self.max_tokens,
                        temperature=self.temperature,
                    )
                    stream = cast(AsyncStream[ChatCompletionChunk], created)
                    chunks = stream.__aiter__()
                    first = await chunks.__anext__()
                return chunks, first
            except StopAsyncIteration as exc:
                raise AgentUnavailable("the model server ended the answer before it began") from exc
            except (TimeoutError, openai.APITimeoutError) as exc:
                if attempt == 2:
                    raise AgentTimeout("the model server did not start answering in time") from exc
            except openai.APIConnectionError as exc:
                if attempt == 2:
                    raise AgentUnavailable("the model server is unreachable") from exc
            except openai.APIStatusError as exc:
                if exc.status_code < 500 or attempt == 2:
                    raise AgentUnavailable(
                        f"the model server answered HTTP {exc.status_code}"
                    ) from exc
        raise AssertionError("unreachable")

    async def stream(
        self, messages: list[ChatMessage], ctx: InvokeContext
    ) -> AsyncIterator[str | Done]:
        chunks, chunk = await self._open(messages)
        parts: list[str] = []
        usage: int | None = None
        try:
            while True:
                if getattr(chunk, "usage", None) is not None and chunk.usage.total_tokens:
                    usage = int(chunk.usage.total_tokens)
                for choice in chunk.choices or ():
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        parts.append(delta)
                        yield delta
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
        except TimeoutError as exc:
            raise AgentTimeout("the model server stopped in the middle of the answer") from exc
        except _MID_ANSWER_ERRORS as exc:
            raise AgentUnavailable(f"the model server failed mid-answer: {exc!r}") from exc
        text = "".join(parts)
        if not text.strip():
            raise AgentUnavailable("the model server answered with nothing")
        if usage is not None:
            yield Done(text, usage, "provider")
        else:
            prompt = sum(estimate_tokens(m.content) for m in messages)
            yield Done(text, prompt + estimate_tokens(text), "estimate")

    async def close(self) -> None:
        await self.client.close()
