"""Identity: HS256 JWT bearer tokens (``sub`` = user id, ``name``, ``exp``), guest tokens, and the
``CurrentUser`` dependency. Identity always comes from the token, never from a body or a frame.
A request's token is read by :func:`bearer_credentials`, for the dependency and the post lane."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, StringConstraints

from daarion_city.clock import from_epoch, iso, system_clock
from daarion_city.config import Settings
from daarion_city.errors import Forbidden, Unauthorized
from daarion_city.ids import new_user_id
from daarion_city.resources import get_resources
from daarion_city.validation import DisplayName, name_problem, user_id_problem

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    user_id: str
    name: str
    expires_at: datetime


class TokenAuthority:
    """Mints and verifies tokens with one secret.

    Verified tokens are remembered (up to ``cache_size``, until their ``exp``): a client sends
    the same token with every request, and checking its signature again costs more than the
    rest of a small request's authentication. Only tokens that verified are kept, so a forged
    one is checked (and refused) every time."""

    def __init__(self, secret: str, cache_size: int = 10_000) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("CITY_JWT_SECRET must be at least 32 bytes (RFC 7518, HS256)")
        self._secret = secret
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size

    def mint(self, user_id: str, name: str | None, ttl_seconds: float) -> IssuedToken:
        """A token for ``user_id``; ValueError for a user id or a name that :meth:`verify`
        would refuse or ignore (the rules of validation.py)."""
        problem = user_id_problem(user_id)
        if problem is None and name is not None:
            problem = name_problem(name, agent_names=False)
            name = name.strip()
        if problem is not None:
            raise ValueError(problem)
        now = system_clock()
        exp = int(now + ttl_seconds)
        claims = {"sub": user_id, "name": name or user_id, "iat": int(now), "exp": exp}
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, user_id, name or user_id, from_epoch(exp))

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token")
        known = self._verified.get(token)
        if known is not None:
            if known[1] > system_clock():
                return known[0]
            del self._verified[token]
        principal, exp = self._check(token)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()  # crude but bounded; refilled by the next requests
        self._verified[token] = (principal, exp)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or user_id_problem(sub) is not None:
            raise Unauthorized("invalid token subject")  # not a user id, or an agent's
        # A name that breaks the rules of names people see (invisible, control characters,
        # bidi overrides, an agent's ag_) is ignored, as a missing one: the user id stands in.
        name = claims.get("name")
        if not isinstance(name, str) or name_problem(name, agent_names=False) is not None:
            name = sub
        return Principal(user_id=sub, name=name.strip()[:100]), float(claims["exp"])


def load_secret(settings: Settings) -> str:
    """``CITY_JWT_SECRET`` if set; else a secret generated once and kept in the data directory,
    so tokens survive a restart."""
    if settings.city_jwt_secret is not None and settings.city_jwt_secret.get_secret_value():
        return settings.city_jwt_secret.get_secret_value()
    path = Path(settings.city_data_dir) / SECRET_FILE
    if path.exists():
        return path.read_text("ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once agree on the first secret written.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text("ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret)
    return secret


def describe_secret(settings: Settings) -> str:
    """What ``check-config`` shows for the signing secret: never the secret, but where it is."""
    if settings.city_jwt_secret is not None and settings.city_jwt_secret.get_secret_value():
        return "********"  # from CITY_JWT_SECRET, like every secret setting
    path = (Path(settings.city_data_dir) / SECRET_FILE).resolve()
    if path.exists():
        return f"******** (generated, kept in {path})"
    return f"not set: generated into {path} on the first start"


def bearer_credentials(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of a request's ``Authorization: Bearer <token>`` (ASGI headers): the first
    ``Authorization`` header, its scheme in any case, its token stripped of spaces around it;
    None without the header, with another scheme or without a token. What FastAPI's
    ``HTTPBearer(auto_error=False)`` accepts, header for header (tests/test_access.py)."""
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


def get_authority(request: Request) -> TokenAuthority:
    return get_resources(request).auth


async def current_user(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> Principal:
    return get_authority(request).verify(token)


CurrentUser = Annotated[Principal, Depends(current_user)]


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
    resources = get_resources(request)
    settings = resources.settings
    if not settings.city_allow_guests:
        raise Forbidden("guest sign-in is disabled", code="guests_disabled")
    address = request.client.host if request.client else "unknown"
    await resources.limiter.hit(
        f"guest:{address}", rate=settings.city_guest_rate, burst=settings.city_guest_burst
    )
    issued = resources.auth.mint(new_user_id(), body.name, resources.settings.city_guest_token_ttl)
    return {
        "token": issued.token,
        "user_id": issued.user_id,
        "name": issued.name,
        "expires_at": iso(issued.expires_at),
    }
