"""Presence over HTTP: read who is online, heartbeat, and go offline (``sendBeacon`` friendly)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from daarion_city.core.answers import public_read
from daarion_city.core.errors import Unauthorized, ValidationErrorBody, error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import MAX_LAST_ACTIVE_MS as MAX_ACTIVE_MS
from daarion_city.core.validation import USER_ID_PATTERN, whole_number
from daarion_city.identity.http import CurrentUser
from daarion_city.identity.principal import Principal
from daarion_city.identity.tokens import AUTH
from daarion_city.presence.service import PRESENCE

router = APIRouter(prefix="/city/presence", tags=["presence"])

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
    429: error_doc("too many presence writes (`rate_limited`), see Retry-After"),
}


class PresenceRecord(BaseModel):
    user_id: str
    name: str
    status: Literal["online", "away", "offline"]
    last_seen: str | None


class OnlineList(BaseModel):
    online_count: int
    users: list[PresenceRecord]


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["online", "away"] | None = None
    # JSON true/false and strings are not milliseconds; 5.0 is (JSON Schema's integer). The
    # bounds come before the validator, so the OpenAPI document states them as minimum and
    # maximum (after it, pydantic writes them as "ge"/"le", which JSON Schema does not know).
    last_active_ago_ms: (
        Annotated[int, Field(ge=0, le=MAX_ACTIVE_MS, strict=True), BeforeValidator(whole_number)]
        | None
    ) = None


class OfflineBody(BaseModel):
    """The beacon body: ``sendBeacon`` cannot set headers, so it may carry the token."""

    model_config = ConfigDict(extra="ignore")

    token: Annotated[str, Field(max_length=4096)] | None = None
    connection_id: Annotated[str, Field(max_length=128)] | None = None


@router.get("", response_model=OnlineList)
async def online(request: Request) -> Response:
    return public_read(request, await provided(request, PRESENCE).reads.online_answer())


@router.get("/{user_id}", response_model=PresenceRecord)
async def one(
    request: Request, user_id: Annotated[str, Path(max_length=80, pattern=USER_ID_PATTERN)]
) -> dict[str, Any]:
    """A user id of another shape is no user's: 422 before any store is asked."""
    return await provided(request, PRESENCE).reads.get(user_id)


@router.post("/heartbeat", response_model=PresenceRecord, responses=WRITE_ERRORS)
async def heartbeat(
    request: Request, user: CurrentUser, body: HeartbeatBody | None = None
) -> dict[str, Any]:
    presence = provided(request, PRESENCE)
    await presence.check_write(user)
    body = body or HeartbeatBody()
    await presence.heartbeat(
        user, "http", status=body.status, last_active_ago_ms=body.last_active_ago_ms
    )
    return await presence.reads.get(user.user_id)


@router.post(
    "/offline",
    status_code=204,
    response_class=Response,
    responses={
        **WRITE_ERRORS,
        422: {
            "model": ValidationErrorBody,
            "description": 'the body is not `{"token"?, "connection_id"?}` (`validation_error`)',
        },
    },
    openapi_extra={
        # The bearer token as everywhere; a beacon, which cannot set headers, may put it in the
        # body instead (the route reads the header itself, so FastAPI cannot document it).
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": OfflineBody.model_json_schema()}},
        },
    },
)
async def offline(request: Request) -> Response:
    """Offline at once. The token comes from ``Authorization`` or, for ``navigator.sendBeacon``
    (which sends text/plain and cannot set headers), from the body's ``token``."""
    presence = provided(request, PRESENCE)
    raw = await request.body()
    body = OfflineBody()
    if raw.strip():
        try:
            body = OfflineBody.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            # The shape of every other body's 422 (FastAPI's, and the JSON check's in front).
            problem = {"loc": ["body"], "msg": 'the body must be {"token"?, "connection_id"?}'}
            raise RequestValidationError([{**problem, "type": "value_error"}]) from exc
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else body.token
    if not token:
        raise Unauthorized("missing bearer token")
    user: Principal = provided(request, AUTH).verify(token)
    await presence.check_write(user)
    await presence.offline(user, body.connection_id)
    return Response(status_code=204)
