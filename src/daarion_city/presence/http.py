"""Presence over HTTP: read who is online, heartbeat, and go offline (``sendBeacon`` friendly)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daarion_city.auth import CurrentUser, Principal
from daarion_city.errors import Unauthorized, Unprocessable
from daarion_city.resources import get_resources

router = APIRouter(prefix="/city/presence", tags=["presence"])


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
    last_active_ago_ms: Annotated[int, Field(ge=0, le=10**12)] | None = None


class OfflineBody(BaseModel):
    """The beacon body: ``sendBeacon`` cannot set headers, so it may carry the token."""

    model_config = ConfigDict(extra="ignore")

    token: Annotated[str, Field(max_length=4096)] | None = None
    connection_id: Annotated[str, Field(max_length=128)] | None = None


@router.get("", response_model=OnlineList)
async def online(request: Request) -> dict[str, Any]:
    return await get_resources(request).presence.online()


@router.get("/{user_id}", response_model=PresenceRecord)
async def one(request: Request, user_id: Annotated[str, Path(max_length=80)]) -> dict[str, Any]:
    return await get_resources(request).presence.get(user_id)


@router.post("/heartbeat", response_model=PresenceRecord)
async def heartbeat(
    request: Request, user: CurrentUser, body: HeartbeatBody | None = None
) -> dict[str, Any]:
    presence = get_resources(request).presence
    body = body or HeartbeatBody()
    await presence.heartbeat(
        user, "http", status=body.status, last_active_ago_ms=body.last_active_ago_ms
    )
    return await presence.get(user.user_id)


@router.post(
    "/offline",
    status_code=204,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": OfflineBody.model_json_schema()}},
        }
    },
)
async def offline(request: Request) -> Response:
    """Offline at once. The token comes from ``Authorization`` or, for ``navigator.sendBeacon``
    (which sends text/plain and cannot set headers), from the body's ``token``."""
    resources = get_resources(request)
    raw = await request.body()
    body = OfflineBody()
    if raw.strip():
        try:
            body = OfflineBody.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise Unprocessable('the body must be {"token"?, "connection_id"?}') from exc
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else body.token
    if not token:
        raise Unauthorized("missing bearer token")
    user: Principal = resources.auth.verify(token)
    await resources.presence.offline(user, body.connection_id)
    return Response(status_code=204)
