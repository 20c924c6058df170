"""The provider Protocol and the errors every provider maps its failures to.

A provider turns a list of chat messages into an answer, either whole (``complete``) or as a
stream of text deltas ending with a :class:`Done` carrying the token count. It never invents an
answer: anything but a real answer is an exception of this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from daarion_city.errors import CityError

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

    def stream(self, messages: list[ChatMessage], ctx: InvokeContext) -> AsyncIterator[str | Done]:
        """Text deltas as they are generated, then one :class:`Done`. Raises the errors above."""
        ...

    async def close(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A rough count (about 4 characters a token) for when no tokenizer is at hand."""
    return max(1, (len(text) + 3) // 4) if text else 0


async def complete(
    provider: AgentProvider, messages: list[ChatMessage], ctx: InvokeContext
) -> Done:
    """The whole answer, read from the provider's stream."""
    async for item in provider.stream(messages, ctx):
        if isinstance(item, Done):
            return item
    raise AgentUnavailable(f"{provider.name}: the answer ended without a result")
