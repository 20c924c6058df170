"""What every WebSocket endpoint shares: the upgrade checks, authentication, and mapping errors
to frames and close codes (the policy and the table: ``realtime/closes.py``).

Before the upgrade (refused with a plain HTTP answer, as Synapse and Centrifugo do): an
``Origin`` outside ``CITY_ALLOWED_ORIGINS`` gets 403, an address opening sockets faster than
``CITY_WS_CONNECT_RATE`` gets 429 with ``Retry-After``. After it (so a browser sees the 4xxx
close code, which it cannot see on a refused upgrade): the token comes from ``?token=`` or, for
clients that keep tokens out of URLs, from a first frame ``{"event": "auth", "token"}`` sent
within ``CITY_WS_AUTH_TIMEOUT`` (10 s); anything else before it, a bad token, or silence closes
the socket with 4401.

A socket refused while it opens is closed with its error's ``close_code`` (:func:`refuse`); once
it is live, :func:`socket_errors` runs its handler's error ladder, the same for every socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from daarion_city.config import SETTINGS
from daarion_city.core.errors import CityError, RateLimited, Sanctioned, Unauthorized
from daarion_city.core.metrics import METRICS
from daarion_city.core.provided import provided
from daarion_city.identity.principal import Principal
from daarion_city.identity.tokens import AUTH
from daarion_city.ratelimit import LIMITER
from daarion_city.realtime.closes import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_UNAUTHORIZED,
)
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.origins import origin_allowed
from daarion_city.realtime.protocol import Auth, FrameError, decode_object, encode
from daarion_city.realtime.transport import DirectWriter, release_handshake

log = logging.getLogger(__name__)


class SocketQuery(BaseModel):
    """The upgrade's query of every socket (read by :func:`accept_user`)."""

    token: str | SkipJsonSchema[None] = Field(
        None,
        description='a JWT; without it, the first frame must be {"event": "auth", "token"} '
        "within CITY_WS_AUTH_TIMEOUT (else 4401)",
    )


async def accept_user(websocket: WebSocket) -> Principal | None:
    """Check the upgrade, accept the socket and authenticate it; None once it is closed."""
    settings = provided(websocket, SETTINGS)
    metrics = provided(websocket, METRICS)
    if not origin_allowed(
        websocket.headers.get("origin"), websocket.headers.get("host"), settings.allowed_origins
    ):
        metrics.ws_errors.labels("origin_not_allowed").inc()
        await deny(websocket, 403, "origin_not_allowed", "this Origin may not open sockets here")
        return None
    address = websocket.client.host if websocket.client else "unknown"
    try:
        await provided(websocket, LIMITER).hit(
            f"connect:{address}",
            rate=settings.city_ws_connect_rate,
            burst=settings.city_ws_connect_burst,
        )
    except RateLimited as exc:
        metrics.ws_errors.labels("connect_rate_limited").inc()
        await deny(websocket, 429, exc.code, exc.detail, exc.headers())
        return None
    await websocket.accept()
    release_handshake(websocket.scope)
    try:
        token = websocket.query_params.get("token")
        if token is None:
            async with asyncio.timeout(settings.city_ws_auth_timeout):
                token = await _auth_frame(websocket)
        user = provided(websocket, AUTH).verify(token)
    except (Unauthorized, Sanctioned) as exc:  # a suspended user is told why, then 4403
        await refuse(websocket, exc)
        return None
    except TimeoutError:
        wait = settings.city_ws_auth_timeout
        await close(websocket, CLOSE_UNAUTHORIZED, f"no auth frame within {wait:g} s")
        return None
    except _Gone:
        return None
    return user


def socket_connection(websocket: WebSocket, user: Principal, room_id: str) -> Connection:
    """The accepted socket's connection: its bounded send queue, the server's direct writer
    where it has one, and the close timeout (``CITY_WS_SEND_QUEUE``, ``CITY_WS_CLOSE_TIMEOUT``)."""
    settings = provided(websocket, SETTINGS)
    return Connection(
        websocket,
        user,
        room_id,
        max_queue=settings.city_ws_send_queue,
        direct=DirectWriter.for_scope(websocket.scope),
        close_timeout=settings.city_ws_close_timeout,
    )


class _Gone(Exception):
    """The client left before authenticating."""


async def _auth_frame(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise _Gone
    try:
        return Auth.model_validate(decode_object(message.get("text"))).token
    except (FrameError, ValidationError):
        raise Unauthorized(
            'authenticate first: ?token= or {"event": "auth", "token": "..."}'
        ) from None


async def deny(
    websocket: WebSocket,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Refuse the upgrade with an HTTP answer where the server can send one (uvicorn's
    ``websocket.http.response`` extension), else with its plain 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = JSONResponse({"detail": detail, "code": code}, status, headers=headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(CLOSE_POLICY, detail[:120])


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason[:120])
    except (RuntimeError, OSError, WebSocketDisconnect):
        log.debug("socket already closed before close(%s)", code)


async def refuse(websocket: WebSocket, exc: CityError, reason: str | None = None) -> None:
    """Close a socket refused while it opens with the close code its error carries; a 4403
    (banned, kicked, suspended) says why in an ``error`` frame first, so the client knows not
    to reconnect."""
    if exc.close_code == CLOSE_FORBIDDEN:
        with contextlib.suppress(Exception):
            await websocket.send_text(error_event(exc))
    await close(websocket, exc.close_code, exc.detail if reason is None else reason)


@asynccontextmanager
async def socket_errors(websocket: WebSocket, conn: Connection) -> AsyncIterator[None]:
    """The error ladder of a live socket's handler (its ``finally`` stays the handler's): the
    client leaving ends it quietly; a domain error (a store that went away while the socket
    opened, for example) is sent as an ``error`` frame, then 1011; anything else is a bug: the
    client still gets a close frame (1011), and the log the trace."""
    try:
        yield
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    except CityError as exc:
        conn.send(error_event(exc))
        conn.go_live()
        conn.start()
        await conn.stop()
        await close(websocket, CLOSE_INTERNAL, exc.detail)
    except Exception:
        log.exception("%s socket of %s failed", conn.room_id or "presence", conn.user.user_id)
        await conn.stop()
        await close(websocket, CLOSE_INTERNAL, "internal error")


def error_event(exc: CityError, **extra: Any) -> str:
    body = exc.body()  # its extras too: retry_after, a sanction's expires_at
    frame: dict[str, Any] = {"event": "error", "code": exc.code, "message": exc.detail}
    frame.update({k: v for k, v in body.items() if k not in ("detail", "code")})
    frame.update({k: v for k, v in extra.items() if v is not None})
    return encode(frame)
