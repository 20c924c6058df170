"""HS256 JWT bearer tokens (``sub`` = user id, ``name``, ``exp``): minted and verified with one
secret, kept in ``CITY_JWT_SECRET`` or generated once into the data directory. Nothing here knows a
service: the app provides the one :class:`TokenAuthority` under :data:`AUTH`."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jwt

from daarion_city.config import Settings
from daarion_city.core.clock import from_epoch, system_clock
from daarion_city.core.errors import Unauthorized
from daarion_city.core.provided import Key
from daarion_city.core.validation import name_problem, user_id_problem
from daarion_city.identity.principal import Principal

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"


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

    def __init__(
        self,
        secret: str,
        cache_size: int = 10_000,
        on_new: Callable[[Principal], None] | None = None,
        admins: frozenset[str] = frozenset(),
        suspended: Callable[[str], None] | None = None,
        retired: Callable[[str], bool] | None = None,
    ) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("CITY_JWT_SECRET must be at least 32 bytes (RFC 7518, HS256)")
        self._secret = secret
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size
        self._on_new = on_new  # told of each token verified here for the first time
        self._admins = admins  # CITY_ADMINS
        self._suspended = suspended  # raises for a suspended user (identity/suspensions.py)
        self._retired = retired  # an erased user's id (identity/retirements.py)

    def mint(
        self, user_id: str, name: str | None, ttl_seconds: float, *, admin: bool = False
    ) -> IssuedToken:
        """A token for ``user_id``; ValueError for a user id or a name that :meth:`verify`
        would refuse or ignore (the rules of core/validation.py)."""
        problem = user_id_problem(user_id)
        if problem is None and name is not None:
            problem = name_problem(name, agent_names=False)
            name = name.strip()
        if problem is not None:
            raise ValueError(problem)
        now = system_clock()
        exp = int(now + ttl_seconds)
        claims: dict[str, object] = {
            "sub": user_id,
            "name": name or user_id,
            "iat": int(now),
            "exp": exp,
        }
        if admin:
            claims["admin"] = True
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, user_id, name or user_id, from_epoch(exp))

    def verify(self, token: str | None, *, allow_suspended: bool = False) -> Principal:
        """The token's user; 401 for a missing, expired or forged token, 403 ``suspended`` for
        a suspended user (unless ``allow_suspended``: what stays open to them)."""
        principal = self._principal(token)
        if self._suspended is not None and not allow_suspended:
            self._suspended(principal.user_id)
        return principal

    def _principal(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token")
        known = self._verified.get(token)
        if known is not None:
            if known[1] > system_clock():
                return self._not_retired(known[0])
            del self._verified[token]
        principal, exp = self._check(token)
        self._not_retired(principal)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()  # crude but bounded; refilled by the next requests
        self._verified[token] = (principal, exp)
        if self._on_new is not None:
            self._on_new(principal)
        return principal

    def _not_retired(self, principal: Principal) -> Principal:
        """401 for every token of an erased user, however valid its signature (SPEC 12)."""
        if self._retired is not None and self._retired(principal.user_id):
            raise Unauthorized("this account was erased")
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
        admin = claims.get("admin") is True or sub in self._admins
        return Principal(sub, name.strip()[:100], admin), float(claims["exp"])


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


AUTH: Key[TokenAuthority] = Key("auth")
