"""The webhooks' signature (SPEC 11): ``X-City-Signature: t=<unix seconds>,v1=<hex>``, where
the hex is the HMAC-SHA256 of ``"<t>.<body>"`` keyed with ``CITY_WEBHOOK_SECRET``, ``t`` the
time of the attempt. :func:`verify` is what a receiver runs (docs/API.md, "Webhooks")."""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-City-Signature"
EVENT_ID_HEADER = "X-City-Event-Id"
TOLERANCE = 300  # seconds: a receiver refuses a signature older than this (SPEC 12)


def signature(secret: bytes, t: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<t>.<body>"``."""
    return hmac.new(secret, b"%d.%b" % (t, body), hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, t: int | None = None) -> str:
    """The header's value for ``body`` sent at ``t`` (now by default)."""
    at = int(time.time()) if t is None else t
    return f"t={at},v1={signature(secret, at, body)}"


def verify(
    secret: bytes | str,
    header: str | None,
    body: bytes,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` (the raw bytes received) with ``secret`` at a time no
    more than ``tolerance`` seconds from ``now``: false for a missing, malformed, stale or
    wrong signature. Any of several ``v1`` values may match."""
    if not header:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1":
            candidates.append(value)
    if t is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = signature(key, t, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
