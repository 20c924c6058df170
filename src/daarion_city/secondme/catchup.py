"""Catch-up (SPEC section 5b and 12): Second Me summarises what a room said since the caller last
read it.

The room's newest messages after the caller's read marker (at most ``CATCHUP_MESSAGES``,
tombstones skipped; the rooms' ``Unread.since_marker``, passed in as ``CatchupSource``) that fit
the budget (the model's window less the answer's room and the instructions, else
``SECONDME_CONTEXT_TOKENS``; the oldest are dropped first) go to the agent as a JSON document
in a user message, after fixed instructions (``context.catchup_messages``): nothing of the
caller's memory is in that context, and no message of the room can pose as instructions. It
runs as an invoke does (the lease, the budgets, the breakers, failures kept in the history) and
is stored as a user turn ("Catch-up: <room>, messages a-b") and the assistant's summary. The
read marker does not move. Nothing new: no model call, nothing stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from daarion_city.core.errors import CityError
from daarion_city.identity.principal import Principal
from daarion_city.secondme.context import Built, catchup_messages, data
from daarion_city.secondme.providers.base import TEMPLATE_TOKENS, estimate_tokens_high
from daarion_city.secondme.service import Answer, SecondMeService

CATCHUP_MESSAGES = 200


class CatchupUnavailable(CityError):
    status, code = 503, "catchup_unavailable"


@dataclass(frozen=True, slots=True)
class CatchupAnswer:
    room_id: str
    from_seq: int | None
    to_seq: int | None
    messages_considered: int
    summary: str
    tokens_used: int
    latency_ms: int

    def wire(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "messages_considered": self.messages_considered,
            "summary": self.summary,
            "tokens_used": self.tokens_used,
            "latency_ms": self.latency_ms,
        }


def fitting(service: SecondMeService, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest messages whose JSON fits the catch-up's budget, oldest first."""
    s = service.settings
    window = service.provider.window
    budget = s.secondme_context_tokens
    if window is not None:
        fixed = estimate_tokens_high(data(catchup_messages("", []))) + 4 * TEMPLATE_TOKENS
        budget = window - s.secondme_max_tokens - fixed
    kept: list[dict[str, Any]] = []
    for message in reversed(messages):
        cost = estimate_tokens_high(data(message)) + 1
        if cost > budget:
            break
        budget -= cost
        kept.append(message)
    return kept[::-1]


async def catchup_stream(
    service: SecondMeService, user: Principal, room: str
) -> AsyncIterator[str | CatchupAnswer]:
    """Text deltas, then one :class:`CatchupAnswer` (see the module)."""
    if service.catchup_source is None:
        raise CatchupUnavailable("catch-up needs the city's rooms in this process")
    found = await service.catchup_source(user, room, CATCHUP_MESSAGES)
    room_id, name = str(found["room_id"]), str(found["name"])
    messages = fitting(service, list(found["messages"]))
    if not messages:
        yield CatchupAnswer(room_id, None, None, 0, "", 0, 0)
        return
    first, last = int(messages[0]["seq"]), int(messages[-1]["seq"])
    quoted = [{"author": m["author"], "text": m["body"], "at": m["created_at"]} for m in messages]
    built = Built(
        catchup_messages(name, quoted),
        {
            "about": False,
            "summary": False,
            "recent": [],
            "recalled": [],
            "room_id": room_id,
            "from_seq": first,
            "to_seq": last,
        },
    )
    weight = sum(estimate_tokens_high(m["text"]) for m in quoted)
    asked = f"Catch-up: {name}, messages {first}-{last}"
    async for item in service.invoke_stream(user, asked, build=lambda _: built, weight=weight):
        if isinstance(item, Answer):
            yield CatchupAnswer(
                room_id,
                first,
                last,
                len(messages),
                item.response,
                item.tokens_used,
                item.latency_ms,
            )
        else:
            yield item


async def catchup(service: SecondMeService, user: Principal, room: str) -> dict[str, Any]:
    answer: CatchupAnswer | None = None
    async for item in catchup_stream(service, user, room):
        if isinstance(item, CatchupAnswer):
            answer = item
    assert answer is not None
    return answer.wire()
