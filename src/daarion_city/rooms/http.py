"""HTTP routes of city rooms: parse, call the service once, serialise."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from daarion_city.auth import CurrentUser
from daarion_city.errors import Unprocessable
from daarion_city.resources import get_resources
from daarion_city.rooms.schemas import (
    MembershipAnswer,
    Message,
    MessageCreate,
    MessagePage,
    Room,
    RoomCreate,
    RoomDetail,
)

router = APIRouter(prefix="/city/rooms", tags=["rooms"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, expired or forged token (`unauthorized`)"},
    404: {"description": "no such room (`room_not_found`)"},
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
    responses={409: {"description": "slug taken (`room_exists`)"}, **ERRORS},
)
async def create_room(request: Request, body: RoomCreate, user: CurrentUser) -> dict[str, Any]:
    return await get_resources(request).rooms.create_room(user, body)


@router.get("/{room}", response_model=RoomDetail, responses=ERRORS)
async def get_room(request: Request, room: str) -> dict[str, Any]:
    return await get_resources(request).rooms.get_room(room)


@router.get("/{room}/messages", response_model=MessagePage, responses=ERRORS)
async def list_messages(
    request: Request,
    room: str,
    before_seq: Annotated[int | None, Query(ge=0)] = None,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    if before_seq is not None and after_seq is not None and after_seq >= before_seq:
        raise Unprocessable("after_seq must be below before_seq", code="invalid_range")
    return await get_resources(request).rooms.messages(
        room, before_seq=before_seq, after_seq=after_seq, limit=limit
    )


@router.post(
    "/{room}/messages",
    response_model=Message,
    status_code=201,
    responses={
        429: {"description": "rate limited (`rate_limited`), see Retry-After"},
        **ERRORS,
    },
)
async def post_message(
    request: Request, response: Response, room: str, body: MessageCreate, user: CurrentUser
) -> dict[str, Any]:
    result = await get_resources(request).rooms.post(user, room, body.body, body.client_msg_id)
    if not result.created:
        # A retry gets the original answer (as Stripe's idempotency keys do), marked as a replay.
        response.headers["Idempotent-Replayed"] = "true"
    return result.message


@router.post("/{room}/join", response_model=MembershipAnswer, responses=ERRORS)
async def join_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await get_resources(request).rooms.set_membership(user, room, join=True)
    return {"status": "joined", "room_id": room_id}


@router.post("/{room}/leave", response_model=MembershipAnswer, responses=ERRORS)
async def leave_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await get_resources(request).rooms.set_membership(user, room, join=False)
    return {"status": "left", "room_id": room_id}
