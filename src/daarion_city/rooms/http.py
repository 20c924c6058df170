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

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from daarion_city.core.answers import json_answer, public_read
from daarion_city.core.errors import ErrorBody, ValidationErrorBody, error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import MAX_SEQ
from daarion_city.identity.http import AnyCurrentUser, CurrentUser
from daarion_city.identity.suspensions import SUSPENSIONS
from daarion_city.rooms.schemas import (
    Me,
    MembershipAnswer,
    Message,
    MessageCreate,
    MessageEdit,
    MessagePage,
    Notification,
    Reactions,
    ReadMarker,
    Room,
    RoomCreate,
    RoomDetail,
    TimelinePage,
    UnreadCounts,
)
from daarion_city.rooms.service import ROOMS
from daarion_city.rooms.timeline import timeline_frames

PREFIX = "/city/rooms"
MESSAGES_PATH = "/{room}/messages"  # posting is served by the post lane too (edge/lanes.py)
router = APIRouter(prefix=PREFIX, tags=["rooms"])
me_router = APIRouter(prefix="/city/me", tags=["me"])

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_doc("no such room (`room_not_found`)")}
ERRORS = {**UNAUTHORIZED, **NOT_FOUND}
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: error_doc("rate limited (`rate_limited`), see Retry-After"),
}
MESSAGE_PATH = MESSAGES_PATH + "/{seq}"
REACTION_PATH = MESSAGE_PATH + "/reactions/{emoji}"
Seq = Annotated[int, Path(ge=1, le=MAX_SEQ, description="the message's seq (its creation's)")]
MAX_EMOJI_PARAM = 64
EmojiParam = Annotated[str, Path(min_length=1, max_length=MAX_EMOJI_PARAM)]
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    **RATE_LIMITED,
    403: error_doc("not the message's author (`forbidden`)"),
    404: error_doc("no such room or message (`room_not_found`, `message_not_found`)"),
    409: error_doc("the message is deleted (`message_deleted`)"),
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
    room_id = await provided(request, ROOMS).membership.set(user, room, join=True)
    return {"status": "joined", "room_id": room_id}


@router.post("/{room}/leave", response_model=MembershipAnswer, responses=ERRORS)
async def leave_room(request: Request, room: str, user: CurrentUser) -> dict[str, str]:
    room_id = await provided(request, ROOMS).membership.set(user, room, join=False)
    return {"status": "left", "room_id": room_id}


@router.get("/{room}/events", response_model=TimelinePage, responses=NOT_FOUND)
async def list_events(
    request: Request,
    room: str,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> Response:
    """The timeline after a seq, each event exactly as the room socket sends it (how a client
    catches up over HTTP after ``resync_required``)."""
    rooms = provided(request, ROOMS)
    room_id = await rooms.resolve(room)
    frames = await timeline_frames(rooms.db, room_id, after_seq, limit + 1)
    events = [orjson.loads(frame) for _, frame in frames[:limit]]
    return public_read(request, {"events": events, "has_more": len(frames) > limit})


@router.patch(MESSAGE_PATH, response_model=Message, responses=CHANGE_ERRORS)
async def edit_message(
    request: Request, room: str, seq: Seq, body: MessageEdit, user: CurrentUser
) -> Response:
    timeline = provided(request, ROOMS).timeline
    return json_answer(await timeline.edit_message(user, room, seq, body.body))


@router.delete(MESSAGE_PATH, response_model=Message, responses=CHANGE_ERRORS)
async def delete_message(request: Request, room: str, seq: Seq, user: CurrentUser) -> Response:
    return json_answer(await provided(request, ROOMS).timeline.delete_message(user, room, seq))


@router.put(REACTION_PATH, response_model=Reactions, responses=CHANGE_ERRORS)
async def add_reaction(
    request: Request, room: str, seq: Seq, emoji: EmojiParam, user: CurrentUser
) -> Response:
    timeline = provided(request, ROOMS).timeline
    return json_answer(await timeline.set_reaction(user, room, seq, emoji, add=True))


@router.delete(REACTION_PATH, response_model=Reactions, responses=CHANGE_ERRORS)
async def remove_reaction(
    request: Request, room: str, seq: Seq, emoji: EmojiParam, user: CurrentUser
) -> Response:
    timeline = provided(request, ROOMS).timeline
    return json_answer(await timeline.set_reaction(user, room, seq, emoji, add=False))


def invalid(what: str) -> dict[str, Any]:
    """A 422 of the route's own, or FastAPI's list of what the request breaks."""
    return {
        "model": ValidationErrorBody | ErrorBody,
        "description": f"`validation_error` (the request), or {what}",
    }


@router.post(
    "/{room}/read",
    response_model=UnreadCounts,
    responses={**ERRORS, 422: invalid("`invalid_seq`: a seq past the room's newest")},
)
async def mark_read(request: Request, room: str, body: ReadMarker, user: CurrentUser) -> Response:
    """Move your read marker forward (an older seq leaves it where it is)."""
    return json_answer(await provided(request, ROOMS).unread.mark_read(user, room, body.seq))


@me_router.get("", response_model=Me, responses=UNAUTHORIZED)
async def me(request: Request, user: AnyCurrentUser) -> Response:
    """Who you are and what you may do (open to a suspended user too)."""
    suspended, _ = provided(request, SUSPENSIONS).end_of(user.user_id)
    return json_answer(await provided(request, ROOMS).unread.me(user, suspended=suspended))


@me_router.get("/unread", response_model=list[UnreadCounts], responses=UNAUTHORIZED)
async def my_unread(request: Request, user: CurrentUser) -> Response:
    """Your counts in every room you joined and in every default room."""
    return json_answer(await provided(request, ROOMS).unread.of_user(user.user_id))


@me_router.get(
    "/notifications",
    response_model=list[Notification],
    responses={
        **UNAUTHORIZED,
        404: error_doc("`before` names no notification of yours (`notification_not_found`)"),
    },
)
async def my_notifications(
    request: Request,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
) -> Response:
    """Mentions of you and replies to your messages, newest first."""
    unread = provided(request, ROOMS).unread
    return json_answer(await unread.notifications(user, limit=limit, before=before))
