"""HTTP routes of city rooms: parse, call the service once, serialise.

The two hot routes (posting and reading a page of messages) answer with the service's wire
dicts encoded once by orjson: FastAPI would otherwise validate each answer against its model
again, about a tenth of a post's server time. The models stay declared for the OpenAPI
document, and the contract tests hold the answers to them.

Posting has a lane of its own (:class:`PostLane`): a request the route would accept as it is
(a JSON body that ``MessageCreate`` validates, a bearer token that verifies) is served without
FastAPI's routing, dependency solving and request objects, which cost more server time per post
than storing and broadcasting it (bench/RESULTS.md). Every other request, malformed ones
included, goes on to the route, so each error has one definition.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from daarion_city.auth import CurrentUser
from daarion_city.errors import (
    CityError,
    Unauthorized,
    error_doc,
    error_response,
    unexpected_error,
)
from daarion_city.middleware import is_json, read_body, replay_body
from daarion_city.resources import Resources, get_resources
from daarion_city.rooms.schemas import (
    MembershipAnswer,
    Message,
    MessageCreate,
    MessagePage,
    Room,
    RoomCreate,
    RoomDetail,
)
from daarion_city.validation import MAX_SEQ

router = APIRouter(prefix="/city/rooms", tags=["rooms"])

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_doc("no such room (`room_not_found`)")}
ERRORS = {**UNAUTHORIZED, **NOT_FOUND}
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: error_doc("rate limited (`rate_limited`), see Retry-After"),
}


@router.get("", response_model=list[Room])
async def list_rooms(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    return await get_resources(request).rooms.list_rooms(limit=limit, offset=offset)


@router.post(
    "",
    response_model=RoomDetail,
    status_code=201,
    responses={409: error_doc("slug taken (`room_exists`)"), **UNAUTHORIZED, **RATE_LIMITED},
)
async def create_room(request: Request, body: RoomCreate, user: CurrentUser) -> dict[str, Any]:
    return await get_resources(request).rooms.create_room(user, body)


@router.get("/{room}", response_model=RoomDetail, responses=NOT_FOUND)
async def get_room(request: Request, room: str) -> dict[str, Any]:
    return await get_resources(request).rooms.get_room(room)


@router.get("/{room}/messages", response_model=MessagePage, responses=NOT_FOUND)
async def list_messages(
    request: Request,
    room: str,
    before_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    # Both bounds: the messages strictly between them, an empty page when there is no room
    # between them (as a query of an empty range answers, not as an error).
    page = await get_resources(request).rooms.messages(
        room, before_seq=before_seq, after_seq=after_seq, limit=limit
    )
    return _json(page)


@router.post(
    "/{room}/messages",
    response_model=Message,
    status_code=201,
    responses={**RATE_LIMITED, **ERRORS},
)
async def post_message(
    request: Request, room: str, body: MessageCreate, user: CurrentUser
) -> Response:
    result = await get_resources(request).rooms.commit.post(
        user, room, body.body, body.client_msg_id
    )
    if not result.created:
        # A retry gets the original answer (as Stripe's idempotency keys do), marked as a replay.
        return _json(result.message, 201, {"Idempotent-Replayed": "true"})
    return _json(result.message, 201)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


_MESSAGES_PATH = re.compile(r"/city/rooms/([^/]+)/messages")
_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")


class PostLane:
    """``POST /city/rooms/{room}/messages`` for requests the route would accept as they are.

    Pure ASGI, inside the request-context middleware (request id, body limits, metrics, access
    log), which has already read and checked a JSON body. The answer is the route's: 201 with
    the message (``Idempotent-Replayed: true`` for a replay) or the domain error the service
    raised. A request without a bearer token that verifies, or with a body that is not JSON or
    that ``MessageCreate`` refuses, goes on to the app and its route, untouched."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _MESSAGES_PATH.fullmatch(scope["path"])
            if match is not None and is_json(dict(scope["headers"])):
                body = await read_body(receive)
                if await self._serve(scope, receive, send, match.group(1), body):
                    return
                receive = replay_body(body, receive)
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, room: str, body: bytes
    ) -> bool:
        """Answer the request (True), or leave it to the app (False)."""
        # The first Authorization header, parsed as FastAPI's HTTPBearer does.
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return False
        resources: Resources = self.app.state.resources
        try:
            user = resources.auth.verify(credentials)
            data = MessageCreate.model_validate_json(body)
        except (Unauthorized, ValidationError):
            return False
        try:
            result = await resources.rooms.commit.post(user, room, data.body, data.client_msg_id)
        except CityError as exc:
            await error_response(exc)(scope, receive, send)
            return True
        except Exception as exc:  # as the app's error handler answers it
            await unexpected_error(scope, exc)(scope, receive, send)
            return True
        answer = orjson.dumps(result.message)
        start: list[tuple[bytes, bytes]] = [(b"content-length", str(len(answer)).encode()), _JSON]
        if not result.created:
            start.append(_REPLAYED)
        await send({"type": "http.response.start", "status": 201, "headers": start})
        await send({"type": "http.response.body", "body": answer})
        return True


@router.post("/{room}/join", response_model=MembershipAnswer, responses=ERRORS)
async def join_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await get_resources(request).rooms.set_membership(user, room, join=True)
    return {"status": "joined", "room_id": room_id}


@router.post("/{room}/leave", response_model=MembershipAnswer, responses=ERRORS)
async def leave_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await get_resources(request).rooms.set_membership(user, room, join=False)
    return {"status": "left", "room_id": room_id}
