"""Identity at the HTTP edge: the bearer token of a request (:func:`bearer_credentials`, shared by
the ``CurrentUser`` dependency and the post lane) and the guest sign-in route."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from daarion_city.config import SETTINGS
from daarion_city.core.clock import iso
from daarion_city.core.errors import Forbidden, Unauthorized, error_doc
from daarion_city.core.ids import new_user_id
from daarion_city.core.provided import provided
from daarion_city.core.validation import DisplayName
from daarion_city.identity.principal import Principal
from daarion_city.identity.tokens import AUTH
from daarion_city.identity.yourdata import YOURDATA
from daarion_city.ratelimit import LIMITER


def bearer_credentials(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of a request's ``Authorization: Bearer <token>`` (ASGI headers): the first
    ``Authorization`` header, its scheme in any case, its token stripped of spaces around it;
    None without the header, with another scheme or without a token. What FastAPI's
    ``HTTPBearer(auto_error=False)`` accepts, header for header (tests/identity/test_access.py)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None


class _Bearer(HTTPBearer):
    """``HTTPBearer`` for the OpenAPI document, the token read by :func:`bearer_credentials`."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return bearer_credentials(request.scope["headers"])


_bearer = _Bearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="JWT (HS256) from POST /auth/guest or the CLI",
)


async def current_user(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    return provided(request, AUTH).verify(token)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def current_user_even_suspended(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    return provided(request, AUTH).verify(token, allow_suspended=True)


# What stays open to a suspended user: who they are, their data (SPEC 12).
AnyCurrentUser = Annotated[Principal, Depends(current_user_even_suspended)]


# --- routes -------------------------------------------------------------------------------------
router = APIRouter(tags=["auth"])


class GuestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked before spaces are trimmed, so a newline or a tab at either end is refused too.
    name: Annotated[str, StringConstraints(min_length=1, max_length=64), DisplayName]


class GuestToken(BaseModel):
    token: str
    user_id: str
    name: str
    expires_at: str


@router.post(
    "/auth/guest",
    status_code=201,
    response_model=GuestToken,
    responses={
        403: {"description": "guests are disabled (`guests_disabled`)"},
        429: {"description": "too many sign-ups from this address (`rate_limited`)"},
    },
)
async def guest(request: Request, body: GuestRequest) -> dict[str, str]:
    settings = provided(request, SETTINGS)
    if not settings.city_allow_guests:
        raise Forbidden("guest sign-in is disabled", code="guests_disabled")
    if (token := bearer_credentials(request.scope["headers"])) is not None:
        with contextlib.suppress(Unauthorized):  # a stale token is no reason to refuse
            provided(request, AUTH).verify(token)  # 403 suspended: no new guest for them
    address = request.client.host if request.client else "unknown"
    await provided(request, LIMITER).hit(
        f"guest:{address}", rate=settings.city_guest_rate, burst=settings.city_guest_burst
    )
    issued = provided(request, AUTH).mint(new_user_id(), body.name, settings.city_guest_token_ttl)
    return {
        "token": issued.token,
        "user_id": issued.user_id,
        "name": issued.name,
        "expires_at": iso(issued.expires_at),
    }


# --- your data (SPEC 11) ----------------------------------------------------------------------
DATA_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("missing, expired or forged token, or an erased user's (`unauthorized`)"),
    429: error_doc("at most CITY_EXPORT_RATE exports and erasures per user (`rate_limited`)"),
}


class Erasure(BaseModel):
    user_id: str
    status: str = Field(description="`erased`, or `erasing` while it goes on in the background")


@router.get(
    "/city/me/export",
    tags=["me"],
    responses={
        200: {"description": "everything the city keeps about the caller (a JSON file)"},
        **DATA_ERRORS,
    },
)
async def export_my_data(request: Request, user: AnyCurrentUser) -> Response:
    data = await provided(request, YOURDATA).export(user)
    return Response(
        orjson.dumps(data),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="daarion-city-{user.user_id}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.delete(
    "/city/me", tags=["me"], status_code=202, response_model=Erasure, responses=DATA_ERRORS
)
async def erase_me(request: Request, user: AnyCurrentUser) -> dict[str, str]:
    done = await provided(request, YOURDATA).erase(user)
    return {"user_id": user.user_id, "status": "erased" if done else "erasing"}
