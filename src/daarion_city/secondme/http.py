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
from daarion_city.identity.principal import Principal
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


async def _sse(service: SecondMeService, user: Principal, prompt: str) -> AsyncIterator[bytes]:
    try:
        async for item in service.invoke_stream(user, prompt):
            if isinstance(item, Answer):
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
        _sse(_service(request), user, body.prompt),
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
