"""Admin routes (SPEC section 10): instance-wide suspensions and the city's audit log. Admins are
the users of ``CITY_ADMINS`` and tokens with the ``admin`` claim."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from daarion_city.core.answers import json_answer
from daarion_city.core.errors import Forbidden, NotFound, error_doc
from daarion_city.core.provided import provided
from daarion_city.core.validation import USER_ID_PATTERN, NoNul
from daarion_city.identity.http import CurrentUser
from daarion_city.identity.suspensions import SUSPENSIONS
from daarion_city.storage import moderation as store
from daarion_city.storage.database import DB

router = APIRouter(prefix="/admin", tags=["admin"])

MAX_SUSPENSION_S = 10 * 366 * 24 * 3600
ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token (`unauthorized`)"),
    403: error_doc("not an admin, or a suspension of an admin (`forbidden`)"),
}


class SuspendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul] | None = None
    duration_s: Annotated[int, Field(ge=1, le=MAX_SUSPENSION_S)] | None = None


class Suspension(BaseModel):
    user_id: str
    by: str
    reason: str | None
    created_at: str
    expires_at: str | None = Field(description="null: until lifted")


UserIdPath = Annotated[str, Path(pattern=USER_ID_PATTERN)]


@router.post("/users/{user_id}/suspend", response_model=Suspension, responses=ERRORS)
async def suspend(
    request: Request, user_id: UserIdPath, user: CurrentUser, body: SuspendRequest | None = None
) -> Response:
    """Suspend a user everywhere: every call of theirs answers 403 ``suspended`` and their
    sockets close with 4403, until lifted or ``duration_s`` has passed."""
    body = body or SuspendRequest()
    suspensions = provided(request, SUSPENSIONS)
    made = await suspensions.suspend(user, user_id, duration_s=body.duration_s, reason=body.reason)
    return json_answer(made)


@router.delete(
    "/users/{user_id}/suspend",
    responses={**ERRORS, 404: error_doc("not suspended (`not_suspended`)")},
)
async def unsuspend(request: Request, user_id: UserIdPath, user: CurrentUser) -> Response:
    await provided(request, SUSPENSIONS).unsuspend(user, user_id)
    return json_answer({"user_id": user_id, "suspended": False})


@router.get("/audit", responses={**ERRORS, 404: error_doc("`before` names no entry")})
async def audit(
    request: Request,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
) -> Response:
    """Every moderation action of the city, suspensions included, newest first (admins)."""
    if not user.admin:
        raise Forbidden("the city's audit log is for admins")
    async with provided(request, DB).read() as conn:
        rows = await store.list_audit(conn, None, limit=limit, before=before)
    if rows is None:
        raise NotFound(f"no audit entry {before!r}", code="audit_not_found")
    return json_answer([store.audit_wire(row) for row in rows])
