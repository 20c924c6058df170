"""HTTP routes of room moderation (SPEC section 10): the room's settings, its moderators, bans,
mutes, kicks and audit log. Who may do what is decided in ``rooms/powers.py``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from daarion_city.core.answers import json_answer
from daarion_city.core.errors import error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import (
    AUTHOR_ID_PATTERN,
    MAX_AUTHOR_ID,
    MAX_JSON_SEQ,
    USER_ID_PATTERN,
    NoNul,
    RoomName,
)
from daarion_city.identity.http import CurrentUser
from daarion_city.rooms.schemas import Message, RoomDetail
from daarion_city.rooms.service import ROOMS

router = APIRouter(prefix="/city/rooms", tags=["moderation"])

MAX_DURATION_S = 366 * 24 * 3600  # a sanction of more than a year is one until lifted
MAX_SLOW_MODE_S = 6 * 3600

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
UserIdPath = Annotated[str, Path(pattern=USER_ID_PATTERN)]
# Sanctions and kicks take a Matrix user of a bridged room too (SPEC 6b).
AuthorId = Annotated[str, StringConstraints(max_length=MAX_AUTHOR_ID, pattern=AUTHOR_ID_PATTERN)]
AuthorIdPath = Annotated[str, Path(max_length=MAX_AUTHOR_ID, pattern=AUTHOR_ID_PATTERN)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
    403: error_doc("not your rank, or a user of your rank or higher (`forbidden`)"),
    404: error_doc("no such room (`room_not_found`), or nothing to lift"),
}


class RoomUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100), RoomName] | None = None
    description: Annotated[str, StringConstraints(max_length=500), NoNul] | None = None
    slow_mode_s: Annotated[int, Field(ge=0, le=MAX_SLOW_MODE_S)] | None = None


class SanctionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: AuthorId
    duration_s: Annotated[int, Field(ge=1, le=MAX_DURATION_S)] | None = None
    reason: Reason | None = None


class KickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: AuthorId
    reason: Reason | None = None


class Sanction(BaseModel):
    room_id: str
    user_id: str
    by: str
    reason: str | None
    created_at: str
    expires_at: str | None = Field(description="null: until lifted")


class RoomRole(BaseModel):
    user_id: str
    role: str = Field(description='"owner" or "moderator"')


class AuditEntry(BaseModel):
    id: str
    action: str
    actor_id: str
    target_user_id: str | None
    target_seq: int | None
    reason: str | None
    details: dict[str, Any]
    created_at: str


@router.patch("/{room}", response_model=RoomDetail, responses=ERRORS)
async def update_room(request: Request, room: str, body: RoomUpdate, user: CurrentUser) -> Response:
    """A room's name, description or slow mode (moderators, the owner, admins)."""
    rooms = provided(request, ROOMS)
    values = body.model_dump(exclude_none=True)
    if "name" in values:
        values["name"] = values["name"].strip()
    room_id, _ = await rooms.moderation.update_room(user, room, values)
    return json_answer(await rooms.reads.detail(room_id))


@router.get("/{room}/moderators", response_model=list[RoomRole], responses=ERRORS)
async def moderators(request: Request, room: str) -> Response:
    """The room's owner and moderators (public)."""
    return json_answer(await provided(request, ROOMS).moderation.moderators(room))


async def _set_moderator(
    request: Request, room: str, user_id: str, user: Any, add: bool
) -> Response:
    moderation = provided(request, ROOMS).moderation
    await moderation.set_moderator(user, room, user_id, add=add)
    return json_answer(await moderation.moderators(room))


@router.put("/{room}/moderators/{user_id}", response_model=list[RoomRole], responses=ERRORS)
async def add_moderator(
    request: Request, room: str, user_id: UserIdPath, user: CurrentUser
) -> Response:
    """Name a moderator (the owner, admins); the answer lists the room's roles."""
    return await _set_moderator(request, room, user_id, user, True)


@router.delete("/{room}/moderators/{user_id}", response_model=list[RoomRole], responses=ERRORS)
async def remove_moderator(
    request: Request, room: str, user_id: UserIdPath, user: CurrentUser
) -> Response:
    return await _set_moderator(request, room, user_id, user, False)


def _sanction_routes(kind: str, plural: str) -> None:
    @router.post(f"/{{room}}/{plural}", status_code=201, response_model=Sanction, responses=ERRORS)
    async def create(
        request: Request, room: str, body: SanctionCreate, user: CurrentUser
    ) -> Response:
        moderation = provided(request, ROOMS).moderation
        made = await moderation.sanction(
            user, room, kind, body.user_id, duration_s=body.duration_s, reason=body.reason
        )
        return json_answer(made, 201)

    @router.get(f"/{{room}}/{plural}", response_model=list[Sanction], responses=ERRORS)
    async def listed(request: Request, room: str, user: CurrentUser) -> Response:
        return json_answer(await provided(request, ROOMS).moderation.sanctions(user, room, kind))

    @router.delete(
        f"/{{room}}/{plural}/{{user_id}}", response_model=list[Sanction], responses=ERRORS
    )
    async def lift(
        request: Request, room: str, user_id: AuthorIdPath, user: CurrentUser
    ) -> Response:
        moderation = provided(request, ROOMS).moderation
        await moderation.lift(user, room, kind, user_id)
        return json_answer(await moderation.sanctions(user, room, kind))


_sanction_routes("ban", "bans")
_sanction_routes("mute", "mutes")


@router.post("/{room}/kick", responses=ERRORS)
async def kick(request: Request, room: str, body: KickRequest, user: CurrentUser) -> Response:
    """End a user's membership and close their sockets of the room; they may come back."""
    rooms = provided(request, ROOMS)
    room_id = await rooms.moderation.kick(user, room, body.user_id, body.reason)
    return json_answer({"room_id": room_id, "user_id": body.user_id, "status": "kicked"})


@router.get("/{room}/audit", response_model=list[AuditEntry], responses=ERRORS)
async def audit(
    request: Request,
    room: str,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
) -> Response:
    """The room's moderation actions, newest first (moderators and up)."""
    moderation = provided(request, ROOMS).moderation
    return json_answer(await moderation.audit(user, room, limit=limit, before=before))


# --- reports ------------------------------------------------------------------------------------
reports_router = APIRouter(prefix="/city/reports", tags=["moderation"])


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room_id: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    seq: Annotated[int, Field(ge=1, le=MAX_JSON_SEQ)]
    reason: Reason


class ReportResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["dismiss", "delete_message", "mute_author", "ban_author"]
    duration_s: Annotated[int, Field(ge=1, le=MAX_DURATION_S)] | None = None


class Report(BaseModel):
    id: str
    room_id: str
    seq: int
    reporter_id: str
    reason: str
    status: str = Field(description='"open" or "resolved"')
    action: str | None
    resolved_by: str | None
    created_at: str
    message: Message | None = Field(None, description="the message as it is now")
    reported_text: str | None = Field(
        None, description="the text as reported (to those who may resolve the report)"
    )


REPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: error_doc("no such room, message or report (or another room's report)"),
    409: error_doc("the message is deleted (`message_deleted`), or resolved (`report_resolved`)"),
}


@reports_router.post("", status_code=201, response_model=Report, responses=REPORT_ERRORS)
async def file_report(request: Request, body: ReportCreate, user: CurrentUser) -> Response:
    """Report a message to the room's moderators (one open report per message and reporter: a
    repeat answers 200 with the one filed)."""
    reports = provided(request, ROOMS).reports
    report, created = await reports.file(user, body.room_id, body.seq, body.reason)
    return json_answer(report, 201 if created else 200)


@reports_router.get("", response_model=list[Report], responses=REPORT_ERRORS)
async def list_reports(
    request: Request,
    user: CurrentUser,
    status: Literal["open", "resolved"] | None = None,
    room: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The reports of the rooms you moderate (every room for admins) and those you filed."""
    reports = provided(request, ROOMS).reports
    return json_answer(await reports.listed(user, status=status, ref=room, limit=limit))


@reports_router.post("/{report_id}/resolve", response_model=Report, responses=REPORT_ERRORS)
async def resolve_report(
    request: Request,
    report_id: Annotated[str, Path(min_length=1, max_length=80)],
    body: ReportResolve,
    user: CurrentUser,
) -> Response:
    reports = provided(request, ROOMS).reports
    return json_answer(await reports.resolve(user, report_id, body.action, body.duration_s))
