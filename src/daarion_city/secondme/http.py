"""HTTP routes of Second Me. Every route acts on the caller's own session only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from daarion_city.core.errors import CityError, ErrorBody, ValidationErrorBody, error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import NotBlank
from daarion_city.identity.http import CurrentUser
from daarion_city.secondme.catchup import CatchupAnswer, catchup, catchup_stream
from daarion_city.secondme.service import SECONDME, Answer, SecondMeService

router = APIRouter(prefix="/secondme", tags=["secondme"])

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
}
ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    409: error_doc("`busy`: the previous prompt is still being answered"),
    422: {
        "model": ValidationErrorBody | ErrorBody,
        "description": "`validation_error` (the body), or `prompt_too_long` with `max_tokens`: "
        "the most tokens a prompt may have for the configured model",
    },
    429: error_doc("`rate_limited`: today's token budget is spent"),
    502: error_doc("`agent_unavailable`"),
    503: error_doc("`agent_not_configured`"),
    504: error_doc("`agent_timeout`"),
}


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=5000), NotBlank]


class TurnContext(BaseModel):
    """What an answer's context held: the user's about and summary or not, and the ids of the
    recent and the recalled turns (null on a user turn)."""

    about: bool
    summary: bool
    recent: list[str]
    recalled: list[str]
    room_id: str | None = None  # a catch-up's room and the seqs of its first and last message
    from_seq: int | None = None
    to_seq: int | None = None


class Turn(BaseModel):
    id: str
    role: Literal["user", "assistant"]
    content: str
    created_at: str
    tokens_used: int | None
    latency_ms: int | None
    context: TurnContext | None = None


class InvokeResponse(BaseModel):
    response: str
    tokens_used: int
    latency_ms: int
    history: list[Turn]


class Profile(BaseModel):
    user_id: str
    agent_id: str
    total_interactions: int
    total_tokens: int
    last_interaction: str | None
    provider: Literal["local", "openai", "agents-core"]
    model: str | None  # the GGUF (local), SECONDME_LLM_MODEL (openai), null: the agent chooses


class Memory(BaseModel):
    about: str
    summary: str
    updated_at: str | None


class MemoryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    about: Annotated[str, StringConstraints(max_length=2000)]


class CatchupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: Annotated[str, StringConstraints(min_length=1, max_length=80)]


class CatchupResponse(BaseModel):
    room_id: str
    from_seq: int | None
    to_seq: int | None
    messages_considered: int
    summary: str
    tokens_used: int
    latency_ms: int


class Cleared(BaseModel):
    status: Literal["cleared"]
    deleted: int


def _service(request: Request) -> SecondMeService:
    return provided(request, SECONDME)


@router.post("/invoke", response_model=InvokeResponse, responses=ERRORS)
async def invoke(request: Request, body: InvokeRequest, user: CurrentUser) -> dict[str, Any]:
    return await _service(request).invoke(user, body.prompt)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def _sse(items: AsyncIterator[str | Answer | CatchupAnswer]) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            if isinstance(item, CatchupAnswer):
                yield _event("done", {"done": True, **item.wire()})
            elif isinstance(item, Answer):
                done = {
                    "done": True,
                    "tokens_used": item.tokens_used,
                    "latency_ms": item.latency_ms,
                }
                yield _event("done", done)
            else:
                yield _event("delta", {"delta": item})
    except CityError as exc:
        # The error body as the plain route answers it (with `max_tokens` on prompt_too_long,
        # `retry_after` on rate_limited), and its status.
        yield _event("error", {**exc.body(), "status": exc.status})


@router.post(
    "/invoke/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "events `delta` ({delta}), then `done` ({done, tokens_used, "
            "latency_ms}) or `error` ({code, detail, status}, and `max_tokens` or "
            "`retry_after` as the plain route's error body has them)",
        },
        **ERRORS,
    },
)
async def invoke_stream(
    request: Request, body: InvokeRequest, user: CurrentUser
) -> StreamingResponse:
    return StreamingResponse(
        _sse(_service(request).invoke_stream(user, body.prompt)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/history", response_model=list[Turn], responses=UNAUTHORIZED)
async def history(
    request: Request, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[dict[str, Any]]:
    return await _service(request).history(user, limit)


@router.get("/profile", response_model=Profile, responses=UNAUTHORIZED)
async def profile(request: Request, user: CurrentUser) -> dict[str, Any]:
    return await _service(request).profile(user)


@router.post("/history/clear", response_model=Cleared, responses=UNAUTHORIZED)
async def clear(request: Request, user: CurrentUser) -> dict[str, Any]:
    return {"status": "cleared", "deleted": await _service(request).clear(user)}


@router.get("/memory", response_model=Memory, responses=UNAUTHORIZED)
async def memory(request: Request, user: CurrentUser) -> dict[str, Any]:
    return await _service(request).memories.get(user)


@router.put("/memory", response_model=Memory, responses=UNAUTHORIZED)
async def set_memory(request: Request, body: MemoryUpdate, user: CurrentUser) -> dict[str, Any]:
    return await _service(request).memories.set_about(user, body.about)


@router.post("/memory/forget", response_model=Memory, responses=UNAUTHORIZED)
async def forget(request: Request, user: CurrentUser) -> dict[str, Any]:
    return await _service(request).memories.forget(user)


@router.get(
    "/search",
    response_model=list[Turn],
    responses=UNAUTHORIZED,
)
async def search(
    request: Request,
    user: CurrentUser,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    return await _service(request).memories.search(user, q, limit)


CATCHUP_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: error_doc("`room_not_found`"),
    503: error_doc("`agent_not_configured`, or `catchup_unavailable` (no rooms here)"),
}


@router.post("/catchup", response_model=CatchupResponse, responses=CATCHUP_ERRORS)
async def catch_up(request: Request, body: CatchupRequest, user: CurrentUser) -> dict[str, Any]:
    return await catchup(_service(request), user, body.room)


@router.post(
    "/catchup/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "as `/secondme/invoke/stream`; `done` carries the catch-up's fields",
        },
        **CATCHUP_ERRORS,
    },
)
async def catch_up_stream(
    request: Request, body: CatchupRequest, user: CurrentUser
) -> StreamingResponse:
    return StreamingResponse(
        _sse(catchup_stream(_service(request), user, body.room)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
