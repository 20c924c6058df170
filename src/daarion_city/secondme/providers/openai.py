"""The ``openai`` provider: the OpenAI chat completions API, streamed, against any
OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio, OpenAI).

It speaks the API itself over httpx (one request, Server-Sent Events read line by line, each
chunk parsed by orjson) rather than through the official SDK, whose request building and chunk
models cost about 1.5 ms before the first token (bench/RESULTS.md, issue 23): the errors are
classified from the status and the OpenAI error body (``{"error": {"message", "code"}}``) as the
SDK classifies them.

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
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

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

_MID_ANSWER_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)
_INPUT_STATUSES = frozenset({400, 413, 422})
_CONTEXT_WORDS = re.compile(r"context|too long|too many tokens|exceed", re.IGNORECASE)
_WINDOW = re.compile(
    r"(?:maximum context length is|context window of|context length of|context size of|"
    r"n_ctx\D{0,12})\s*(\d+)",
    re.IGNORECASE,
)


class _StatusError(Exception):
    """The server answered an HTTP error: its status, the error's message and code, and the
    body as it came."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body.decode("utf-8", "replace")[:2000]
        error: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            error = orjson.loads(body)
        if isinstance(error, dict) and isinstance(error.get("error"), dict):
            error = error["error"]
        self.message = str(error.get("message") if isinstance(error, dict) else "") or (
            f"HTTP {status}"
        )
        self.code = error.get("code") if isinstance(error, dict) else None
        super().__init__(self.message)


class _ContextExceeded(Exception):
    """The server refused the request for its length (internal to this module)."""


def api_base(url: str) -> str:
    """The server root or its ``/v1``; the API's paths are under the latter."""
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
        self.url = api_base(base_url) + "/chat/completions"
        self.headers = {
            "Authorization": f"Bearer {api_key or 'unused'}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(idle_timeout, connect=connect_timeout)
        )

    async def _open(
        self, messages: list[ChatMessage]
    ) -> tuple[httpx.Response, AsyncIterator[dict[str, Any]], dict[str, Any]]:
        """Start the upstream stream and wait for its first chunk (retried once): the response
        (to close), its chunks, the first one."""
        body = orjson.dumps(
            {
                "model": self.model,
                "messages": [{"role": m.role, "content": m.content} for m in messages],
                "stream": True,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
            }
        )
        for attempt in (1, 2):
            try:
                return await self._attempt(body)
            except StopAsyncIteration as exc:
                raise AgentUnavailable("the model server ended the answer before it began") from exc
            except (TimeoutError, httpx.TimeoutException) as exc:
                if attempt == 2:
                    raise AgentTimeout("the model server did not start answering in time") from exc
            except (httpx.TransportError, OSError) as exc:
                if attempt == 2:
                    raise AgentUnavailable("the model server is unreachable") from exc
            except _StatusError as exc:
                said = f"{exc.message} {exc.body}"
                if exc.status in _INPUT_STATUSES:
                    if exc.code == "context_length_exceeded" or _CONTEXT_WORDS.search(said):
                        raise _ContextExceeded(said) from exc
                    raise AgentRefused(
                        f"the model server refused this prompt: HTTP {exc.status}: "
                        f"{exc.message[:300]}"
                    ) from exc
                if exc.status < 500 or attempt == 2:
                    raise AgentUnavailable(f"the model server answered HTTP {exc.status}") from exc
        raise AssertionError("unreachable")

    async def _attempt(
        self, body: bytes
    ) -> tuple[httpx.Response, AsyncIterator[dict[str, Any]], dict[str, Any]]:
        async with asyncio.timeout(self.first_token_timeout):
            request = self.client.build_request(
                "POST", self.url, content=body, headers=self.headers
            )
            response = await self.client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    raise _StatusError(response.status_code, await response.aread())
                chunks = _chunks(response)
                return response, chunks, await chunks.__anext__()
            except BaseException:
                await response.aclose()
                raise

    async def _open_fitted(
        self, messages: list[ChatMessage]
    ) -> tuple[httpx.Response, AsyncIterator[dict[str, Any]], dict[str, Any]]:
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
        response, chunks, chunk = await self._open_fitted(messages)
        parts: list[str] = []
        usage: int | None = None
        try:
            while True:
                counted = chunk.get("usage")
                if isinstance(counted, dict) and counted.get("total_tokens"):
                    usage = int(counted["total_tokens"])
                for choice in chunk.get("choices") or ():
                    delta = (choice.get("delta") or {}).get("content")
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
        finally:
            await response.aclose()
        text = "".join(parts)
        if not text.strip():
            raise AgentUnavailable("the model server answered with nothing")
        if usage is not None:
            yield Done(text, usage, "provider")
        else:
            prompt = sum(estimate_tokens(m.content) for m in messages)
            yield Done(text, prompt + estimate_tokens(text), "estimate")

    async def close(self) -> None:
        await self.client.aclose()


async def _chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a chat completions stream (Server-Sent Events: ``data:`` lines until
    ``[DONE]``); a chunk that carries an ``error`` ends the answer as a failure."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank lines, comments, event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            raise httpx.RemoteProtocolError(f"the stream carried an error: {chunk['error']}")
        yield chunk
