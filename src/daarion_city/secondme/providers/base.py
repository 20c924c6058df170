"""The provider Protocol and the errors every provider maps its failures to.

A provider turns a list of chat messages into an answer, either whole (``complete``) or as a
stream of text deltas ending with a :class:`Done` carrying the token count. It never invents an
answer: anything but a real answer is an exception of this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from daarion_city.core.errors import CityError

Role = Literal["system", "user", "assistant"]
TokenSource = Literal["provider", "tokenizer", "estimate"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Done:
    """The end of an answer: the whole text and its token count (and where the count came from)."""

    text: str
    tokens_used: int
    token_source: TokenSource


class AgentUnavailable(CityError):
    status, code = 502, "agent_unavailable"


class AgentRefused(AgentUnavailable):
    """The agent refused this input (a 4xx caused by the prompt): the agent itself works, so the
    circuit breaker does not count it."""


class PromptTooLong(CityError):
    """The prompt alone does not fit the model's context window (with the system prompt and
    the room kept for the answer): ``max_tokens`` is the most a prompt may have, 0 if unknown."""

    status, code = 422, "prompt_too_long"

    def __init__(self, max_tokens: int, detail: str) -> None:
        self.max_tokens = max(0, max_tokens)
        super().__init__(detail)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "max_tokens": self.max_tokens}


class AgentTimeout(CityError):
    status, code = 504, "agent_timeout"


class AgentNotConfigured(CityError):
    status, code = 503, "agent_not_configured"


@dataclass(frozen=True, slots=True)
class InvokeContext:
    user_id: str
    agent_id: str


class AgentProvider(Protocol):
    name: str

    @property
    def model(self) -> str | None:
        """What answers, for the profile and the logs (None: the peer decides)."""
        ...

    @property
    def window(self) -> int | None:
        """The model's context window in tokens, where known (the service fits contexts to it)."""
        ...

    def stream(self, messages: list[ChatMessage], ctx: InvokeContext) -> AsyncIterator[str | Done]:
        """Text deltas as they are generated, then one :class:`Done`. Raises the errors above."""
        ...

    async def close(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A rough count (about 4 characters a token) for when no tokenizer is at hand."""
    return max(1, (len(text) + 3) // 4) if text else 0


def estimate_tokens_high(text: str) -> int:
    """A count that errs high, to fit a remote model's window without its tokenizer: a token per
    3 ASCII characters, and per other character one token less than its UTF-8 bytes (1 for
    Cyrillic, 2 for CJK, 3 for an emoji). Small-vocabulary tokenizers come close to it (SmolLM2:
    Latin 0.75x, Cyrillic 0.9x, emoji 1x, CJK 0.85x of it); large ones stay well below."""
    # In C: the ASCII characters, and each other character's UTF-8 bytes less one.
    ascii_chars = len(text.encode("ascii", "ignore"))
    other = len(text.encode("utf-8", "surrogatepass")) - len(text)
    return (ascii_chars + 2) // 3 + other


# The chat template's markers around one message (ChatML: ``<|im_start|>role\n ... <|im_end|>\n``
# is 5 tokens), with room to spare for other templates.
TEMPLATE_TOKENS = 8


def prompt_limit(
    messages: list[ChatMessage], *, window: int, reserve: int, count: Callable[[str], int]
) -> int:
    """The most tokens the prompt (the last message) may have: the ``window`` less ``reserve``
    tokens for the answer, the system prompt and the chat template around both."""
    system = messages[:1] if messages and messages[0].role == "system" else []
    fixed = sum(count(m.content) + TEMPLATE_TOKENS for m in system) + TEMPLATE_TOKENS
    return max(0, window - reserve - fixed - TEMPLATE_TOKENS)


def fit_messages(
    messages: list[ChatMessage], *, window: int, reserve: int, count: Callable[[str], int]
) -> list[ChatMessage]:
    """The messages that fit a context ``window`` with ``reserve`` tokens left for the answer: the
    system prompt and the new prompt always, then the newest earlier turns that still fit (the
    oldest are dropped first). Raises :class:`PromptTooLong` if the prompt alone cannot fit."""
    system = messages[:1] if messages and messages[0].role == "system" else []
    prompt = messages[-1]
    turns = messages[len(system) : -1]
    limit = prompt_limit(messages, window=window, reserve=reserve, count=count)
    need = count(prompt.content)
    if need > limit:
        raise PromptTooLong(
            limit,
            f"the prompt is {need} tokens; this model takes at most {limit} "
            f"(a {window}-token window, {reserve} kept for the answer)",
        )
    budget = limit - need
    kept: list[ChatMessage] = []
    for m in reversed(turns):
        cost = count(m.content) + TEMPLATE_TOKENS
        if cost > budget:
            break
        budget -= cost
        kept.append(m)
    kept.reverse()
    while kept and kept[0].role != "user":  # start on a user turn
        kept.pop(0)
    return [*system, *kept, prompt]


async def complete(
    provider: AgentProvider, messages: list[ChatMessage], ctx: InvokeContext
) -> Done:
    """The whole answer, read from the provider's stream."""
    async for item in provider.stream(messages, ctx):
        if isinstance(item, Done):
            return item
    raise AgentUnavailable(f"{provider.name}: the answer ended without a result")
