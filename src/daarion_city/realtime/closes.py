"""The socket policy: every WebSocket close code the service sends, what it means, and whether
the client should reconnect (as Centrifuge's ``disconnect.go`` documents its own codes).

- An upgrade refused before any socket opens (an ``Origin`` outside ``CITY_ALLOWED_ORIGINS``,
  connecting faster than ``CITY_WS_CONNECT_RATE``) gets an HTTP answer (403, 429) where the
  server can send one, else 1008.
- A socket refused while it opens is closed with the close code of the domain error that refused
  it (``CityError.close_code``: a token 4401, a room 4404, the user's socket cap 4429, a store
  that does not answer 1013), or 4400 for its query (``realtime/endpoint.py``).
- A live socket whose handler fails gets an ``error`` frame with the cause when it is a domain
  error, then 1011 (``realtime/endpoint.socket_errors``, for both sockets).
- A reader too slow to keep up is closed with 4408 and the server's shutdown closes every socket
  with 1001 (not uvicorn's 1012): both through :func:`close_now`, which does not wait for the
  peer to read.
- 1009 (a frame over ``CITY_WS_MAX_FRAME_BYTES``) is sent by the server's protocol itself.

docs/API.md section 11 lists the same codes with the same advice (a test holds them together), and
``/asyncapi.json`` carries this table as its ``x-close-codes`` (``realtime/asyncapi.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketState

from daarion_city.realtime.protocol import error_frame
from daarion_city.realtime.transport import SCOPE_KEY

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_MANY = 4429

# Never sent: what the server reports for a connection that ended without a close frame (no close
# status, 1005, as uvicorn reports a dropped TCP connection; an abnormal closure, 1006). The
# client did not say goodbye and will likely reconnect.
ABRUPT_CLOSES = frozenset({1005, 1006})


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    meaning: str
    reconnect: bool  # whether the client should open the socket again (as it was)
    advice: str  # what the client should do, as docs/API.md says


CLOSES: dict[int, Close] = {
    c.code: c
    for c in (
        Close(CLOSE_NORMAL, "normal close", False, "—"),
        Close(
            CLOSE_GOING_AWAY, "the server is shutting down", True, "reconnect (another instance)"
        ),
        Close(CLOSE_POLICY, "the upgrade was refused by a server without HTTP denials", False, "—"),
        Close(CLOSE_TOO_BIG, "a frame over CITY_WS_MAX_FRAME_BYTES", True, "not resend it"),
        Close(CLOSE_INTERNAL, "the server failed", True, "reconnect with backoff"),
        Close(CLOSE_TRY_AGAIN, "a store did not answer", True, "reconnect with backoff"),
        Close(CLOSE_BAD_REQUEST, "a bad query", False, "fix the URL"),
        Close(
            CLOSE_UNAUTHORIZED,
            "no valid token, or the account was erased (an `error` `unauthorized` before it)",
            False,
            "get a new token",
        ),
        Close(
            CLOSE_FORBIDDEN,
            "banned from or kicked out of the room, or suspended (the `error` frame before it "
            "says which)",
            False,
            "not reconnect (a kicked user may come back)",
        ),
        Close(CLOSE_NOT_FOUND, "no such room", False, "—"),
        Close(CLOSE_TOO_SLOW, "too slow", True, "reconnect, resume with `since_seq`"),
        Close(CLOSE_TOO_MANY, "too many sockets for the user", False, "close another"),
    )
}


def close_now(websocket: WebSocket, code: int, reason: str, grace: float) -> bool:
    """Close through the server's protocol (``edge/protocol.py``), whatever its flow control
    (see ``realtime/connection.py``), the peer given ``grace`` seconds to take what is
    buffered; False when the socket is not served by it."""
    close = getattr(websocket.scope.get(SCOPE_KEY), "close_now", None)
    if close is None:
        return False
    close(code, reason, grace)
    return True


async def close_bounded(websocket: WebSocket, code: int, reason: str, grace: float) -> None:
    """:func:`close_now`, or with another server its ASGI close, bounded by ``grace`` seconds."""
    if close_now(websocket, code, reason, grace):
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(grace):
            if websocket.application_state != WebSocketState.DISCONNECTED:
                await websocket.close(code, reason)


def expulsion(why: str) -> tuple[str, int]:
    """The ``error`` frame and the close code for a user refused on every socket: ``suspended``
    (``error`` ``suspended``, 4403: do not reconnect until it ends) or ``erased`` (``error``
    ``unauthorized``, 4401: every token of theirs is refused from then on)."""
    if why == "erased":
        return error_frame("unauthorized", "this account was erased"), CLOSE_UNAUTHORIZED
    return error_frame("suspended", "your account is suspended"), CLOSE_FORBIDDEN
