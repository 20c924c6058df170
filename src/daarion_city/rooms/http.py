"""HTTP routes of city rooms: parse, call the service once, serialise.

The posts answer with the service's wire dicts encoded once by orjson
(``core/answers.json_answer``), and the public reads with the encoded snapshots of
``rooms/reads.py``: FastAPI would otherwise validate each answer against its model again.
The models stay declared for the OpenAPI document, and the contract tests hold the answers to
them.

Posting has a lane of its own (``edge/lanes.PostLane``, at ``PREFIX + MESSAGES_PATH``): a
request the route would accept as it is is served there without FastAPI's routing, dependency
solving and request objects; every other request goes on to the route below.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from daarion_city.core.answers import json_answer, public_read
from daarion_city.core.errors import error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import MAX_SEQ
from daarion_city.identity.http import CurrentUser
from daarion_city.rooms.schemas import (
    MembershipAnswer,
    Message,
    MessageCreate,
    MessagePage,
    Room,
    RoomCreate,
    RoomDetail,
)
from daarion_city.rooms.service import ROOMS

PREFIX = "/city/rooms"
MESSAGES_PATH = "/{room}/messages"  # posting is served by the post lane too (edge/lanes.py)
router = APIRouter(prefix=PREFIX, tags=["rooms"])

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
) -> Response:
    return public_read(
        request, await provided(request, ROOMS).reads.room_list(limit=limit, offset=offset)
    )


@router.post(
    "",
    response_model=RoomDetail,
    status_code=201,
    responses={409: error_doc("slug taken (`room_exists`)"), **UNAUTHORIZED, **RATE_LIMITED},
)
async def create_room(request: Request, body: RoomCreate, user: CurrentUser) -> dict[str, Any]:
    return await provided(request, ROOMS).create_room(user, body)


@router.get("/{room}", response_model=RoomDetail, responses=NOT_FOUND)
async def get_room(request: Request, room: str) -> Response:
    return public_read(request, await provided(request, ROOMS).reads.room(room))


@router.get(MESSAGES_PATH, response_model=MessagePage, responses=NOT_FOUND)
async def list_messages(
    request: Request,
    room: str,
    before_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    # Both bounds: the messages strictly between them, an empty page when there is no room
    # between them (as a query of an empty range answers, not as an error).
    page = await provided(request, ROOMS).reads.page(
        room, before_seq=before_seq, after_seq=after_seq, limit=limit
    )
    return public_read(request, page)


@router.post(
    MESSAGES_PATH,
    response_model=Message,
    status_code=201,
    responses={**RATE_LIMITED, **ERRORS},
)
async def post_message(
    request: Request, room: str, body: MessageCreate, user: CurrentUser
) -> Response:
    result = await provided(request, ROOMS).commit.post(
        user, room, body.body, body.client_msg_id, body.reply_to_seq
    )
    if not result.created:
        # A retry gets the original answer (as Stripe's idempotency keys do), marked as a replay.
        return json_answer(result.message, 201, {"Idempotent-Replayed": "true"})
    return json_answer(result.message, 201)


@router.post("/{room}/join", response_model=MembershipAnswer, responses=ERRORS)
async def join_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await provided(request, ROOMS).set_membership(user, room, join=True)
    return {"status": "joined", "room_id": room_id}


@router.post("/{room}/leave", response_model=MembershipAnswer, responses=ERRORS)
async def leave_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await provided(request, ROOMS).set_membership(user, room, join=False)
    return {"status": "left", "room_id": room_id}
