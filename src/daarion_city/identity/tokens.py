"""HS256 JWT bearer tokens (``sub`` = user id, ``name``, ``exp``): minted and verified with one
secret, kept in ``CITY_JWT_SECRET`` or generated once into the data directory. Nothing here knows a
service: the app provides the one :class:`TokenAuthority` under :data:`AUTH`."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

from daarion_city.config import Settings
from daarion_city.core.clock import from_epoch, system_clock
from daarion_city.core.errors import Unauthorized
from daarion_city.core.provided import Key
from daarion_city.core.validation import name_problem, user_id_problem
from daarion_city.identity.principal import Principal

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"
# Three base64url segments, each with at most two "=" of padding (PyJWT accepts those).
_COMPACT = re.compile(r"([\w-]*)(={0,2})\.([\w-]*)(={0,2})\.([\w-]*)(={0,2})", re.ASCII)


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
        self._key = secret.encode()
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
        claims = decode_hs256(token, self._key)
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


def decode_hs256(token: str, key: bytes, now: float | None = None) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``key``, accepted and refused as
    ``jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})``
    does (PyJWT 2.x: its rules, in its order), at a tenth of its cost: Unauthorized "token
    expired" where it raises ExpiredSignatureError, "invalid token" for any other refusal.
    tests/identity/test_tokens.py compares the two over crafted tokens."""
    match = _COMPACT.fullmatch(token)
    if match is None:  # not three segments of the base64url alphabet (extra dots, junk)
        raise Unauthorized("invalid token")
    h64, h_pad, p64, p_pad, s64, s_pad = match.groups()
    header = _json_object(_segment(h64, h_pad))
    if "kid" in header and not isinstance(header["kid"], str):
        raise Unauthorized("invalid token")
    if "crit" in header:  # PyJWT understands one critical extension, "b64"
        crit = header["crit"]
        if not isinstance(crit, list) or not crit or any(c != "b64" for c in crit):
            raise Unauthorized("invalid token")
        if "b64" not in header:
            raise Unauthorized("invalid token")
    if header.get("b64", True) is False:  # a detached payload: never ours
        raise Unauthorized("invalid token")
    payload = _segment(p64, p_pad)
    signature = _segment(s64, s_pad)
    if header.get("alg") != ALGORITHM:  # "none", RS256 (key confusion) or missing
        raise Unauthorized("invalid token")
    signed = token[: match.end(4)].encode()
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256"), signature):
        raise Unauthorized("invalid token")
    claims = _json_object(payload)
    if claims.get("sub") is None or claims.get("exp") is None:
        raise Unauthorized("invalid token")
    if now is None:
        now = time.time()
    if "iat" in claims and _int_claim(claims["iat"]) > now:
        raise Unauthorized("invalid token")
    if "nbf" in claims and _int_claim(claims["nbf"]) > now:
        raise Unauthorized("invalid token")
    if _int_claim(claims["exp"]) <= now:
        raise Unauthorized("token expired")
    if claims.get("aud") or not isinstance(claims["sub"], str):  # no audience expected
        raise Unauthorized("invalid token")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise Unauthorized("invalid token")
    return claims


def _segment(b64: str, pad: str) -> bytes:
    """One base64url segment, refused as PyJWT does: padding that does not complete a quantum,
    a length no encoding has, or unused bits set (a second spelling of the same bytes)."""
    if (pad and (len(b64) + len(pad)) % 4) or len(b64) % 4 == 1:
        raise Unauthorized("invalid token")
    try:
        data = base64.urlsafe_b64decode(b64 + "==")  # extra padding is ignored
    except binascii.Error as exc:
        raise Unauthorized("invalid token") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != b64.encode():
        raise Unauthorized("invalid token")
    return data


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Unauthorized("invalid token") from exc
    if not isinstance(value, dict):
        raise Unauthorized("invalid token")
    return value


def _int_claim(value: Any) -> int:
    """A time claim as PyJWT reads it: ``int(value)`` (so "17" and 17.9 pass, as there)."""
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise Unauthorized("invalid token") from exc


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
