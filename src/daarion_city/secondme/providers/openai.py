"""The ``openai`` provider: the official SDK against any OpenAI-compatible server (Ollama, vLLM,
llama.cpp, LM Studio, OpenAI).

The answer is always streamed from upstream (also for the plain JSON route), so the timeouts are
meaningful: ``connect``, ``first token`` (the wait until the first chunk) and ``idle`` (the
longest gap between chunks). A failure before the first chunk is retried once; after it, never
(the user would see the answer twice).

Windows: with ``SECONDME_LLM_CONTEXT_TOKENS`` the messages are fitted before the call by an
estimate that errs high (no tokenizer of the remote model is at hand); the server's own refusal
(400 ``context_length_exceeded`` or its wording) is the authority: the call is made once more
without the earlier turns, and if the prompt alone is refused it is 422 ``prompt_too_long``
(the window the server states is remembered). Other 400/413/422 answers are the input's fault
(``AgentRefused``, not counted by the circuit breaker); 401/403/404/429 and 5xx are the agent's.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from daarion_city.secondme.providers.base import (
    AgentRefused,
    AgentTimeout,
    AgentUnavailable,
    ChatMessage,
    Done,
    InvokeContext,
    PromptTooLong,
    estimate_tokens,
    estimate_tokens_high,
    fit_messages,
    prompt_limit,
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


_INPUT_STATUSES = frozenset({400, 413, 422})
_CONTEXT_WORDS = re.compile(r"context|too long|too many tokens|exceed", re.IGNORECASE)
_WINDOW = re.compile(
    r"(?:maximum context length is|context window of|context length of|context size of|"
    r"n_ctx\D{0,12})\s*(\d+)",
    re.IGNORECASE,
)


class _ContextExceeded(Exception):
    """The server refused the request for its length (internal to this module)."""


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
        context_tokens: int,
        connect_timeout: float,
        first_token_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.model = model or "default"
        self.window = context_tokens or None  # learnt from the server's refusal when unset
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
                said = f"{exc.message} {exc.body}"
                if exc.status_code in _INPUT_STATUSES:
                    if exc.code == "context_length_exceeded" or _CONTEXT_WORDS.search(said):
                        raise _ContextExceeded(said) from exc
                    raise AgentRefused(
                        f"the model server refused this prompt: HTTP {exc.status_code}: "
                        f"{exc.message[:300]}"
                    ) from exc
                if exc.status_code < 500 or attempt == 2:
                    raise AgentUnavailable(
                        f"the model server answered HTTP {exc.status_code}"
                    ) from exc
        raise AssertionError("unreachable")

    async def _open_fitted(self, messages: list[ChatMessage]) -> tuple[AsyncIterator[Any], Any]:
        if self.window:
            messages = fit_messages(
                messages, window=self.window, reserve=self.max_tokens, count=estimate_tokens_high
            )
        try:
            return await self._open(messages)
        except _ContextExceeded as exc:
            said = str(exc)
        found = _WINDOW.search(said)
        if found:
            self.window = int(found.group(1))
        bare = [m for m in messages[:1] if m.role == "system"] + messages[-1:]
        if len(bare) < len(messages):  # drop the earlier turns and ask once more
            try:
                return await self._open(bare)
            except _ContextExceeded as exc:
                said = str(exc)
        limit = (
            prompt_limit(
                bare, window=self.window, reserve=self.max_tokens, count=estimate_tokens_high
            )
            if self.window
            else 0
        )
        raise PromptTooLong(
            limit, f"the model server cannot fit this prompt in its window: {said[:300]}"
        )

    async def stream(
        self, messages: list[ChatMessage], ctx: InvokeContext
    ) -> AsyncIterator[str | Done]:
        chunks, chunk = await self._open_fitted(messages)
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
