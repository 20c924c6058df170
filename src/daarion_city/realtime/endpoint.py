"""What every WebSocket endpoint shares: authenticate after accept (so the client sees a 4xxx
close code, which browsers cannot see on a refused upgrade), map errors to frames and codes."""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from daarion_city.auth import Principal
from daarion_city.errors import CityError, Unauthorized
from daarion_city.realtime.protocol import encode
from daarion_city.resources import Resources, get_resources

log = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013


async def accept_user(websocket: WebSocket) -> tuple[Resources, Principal] | None:
    """Accept the socket and authenticate ``?token=``; on failure close with 4401."""
    resources = get_resources(websocket)
    await websocket.accept()
    try:
        user = resources.auth.verify(websocket.query_params.get("token"))
    except Unauthorized as exc:
        await close(websocket, CLOSE_UNAUTHORIZED, exc.detail)
        return None
    return resources, user


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason[:120])
    except (RuntimeError, OSError, WebSocketDisconnect):
        log.debug("socket already closed before close(%s)", code)


def error_event(exc: CityError, **extra: Any) -> str:
    frame: dict[str, Any] = {"event": "error", "code": exc.code, "message": exc.detail}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        frame["retry_after"] = round(retry_after, 3)
    frame.update({k: v for k, v in extra.items() if v is not None})
    return encode(frame)
