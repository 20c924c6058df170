"""The presence WebSocket ``/ws/city/presence?token=...``.

On connect the socket counts as a heartbeat and gets ``presence.bulk_update``; then
``presence.heartbeat`` frames refresh its TTL (recommended every 15-20 s) and ``presence.update``
frames arrive whenever anyone's status changes. Closing the user's last connection (with a close
frame) takes them offline at once; a connection that just drops is left to its TTL.

A user has at most ``PRESENCE_MAX_SOCKETS_PER_USER`` presence sockets on an instance (one more
is closed with 4429), and their sockets' heartbeats share one bucket there
(``PRESENCE_WRITE_RATE`` / ``PRESENCE_WRITE_BURST``; past it an ``error`` ``rate_limited`` with
``retry_after``, and the socket stays open)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.websockets import WebSocket

from daarion_city.core.errors import CityError, RateLimited
from daarion_city.core.provided import INSTANCE_ID, provided
from daarion_city.presence.frames import parse_presence_frame
from daarion_city.presence.service import PRESENCE
from daarion_city.realtime.caps import TooManySockets
from daarion_city.realtime.closes import ABRUPT_CLOSES
from daarion_city.realtime.endpoint import (
    accept_user,
    error_event,
    refuse,
    socket_connection,
    socket_errors,
)
from daarion_city.realtime.protocol import PONG, FrameError, Ping, error_frame

log = logging.getLogger(__name__)
router = APIRouter()
SOCKET_PATH = "/ws/city/presence"  # served by the socket lane too (edge/lanes.py)


@router.websocket(SOCKET_PATH)
async def presence_socket(websocket: WebSocket) -> None:
    user = await accept_user(websocket)
    if user is None:
        return
    presence = provided(websocket, PRESENCE)
    settings, metrics = presence.settings, presence.metrics
    try:
        presence.sockets_per_user.reserve(user.user_id)
    except TooManySockets as exc:
        await refuse(websocket, exc)
        return
    conn = socket_connection(websocket, user, "")
    conn_id = f"{provided(websocket, INSTANCE_ID)}:p{conn.id}"
    limits = settings.json_limits
    metrics.presence_sockets.inc()
    clean_close = False
    try:
        async with socket_errors(websocket, conn):
            await presence.open_socket(conn, conn_id)
            conn.start()
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    # A socket the server closed for its shutdown is left to its TTL, like a
                    # dropped one: its client reconnects (to another instance) and stays online.
                    # So is one the server closed as too slow (4408): its client reconnects.
                    clean_close = (
                        message.get("code", 1000) not in ABRUPT_CLOSES
                        and not conn.going_away
                        and not conn.closing
                    )
                    break
                if conn.closing:  # closed by the server (too slow): its client will reconnect
                    break
                try:
                    frame = parse_presence_frame(message.get("text"), limits)
                except FrameError as exc:
                    metrics.ws_errors.labels(exc.code).inc()
                    conn.send(error_frame(exc.code, exc.message))
                    continue
                if isinstance(frame, Ping):
                    conn.send(PONG)
                    continue
                # The user's bucket on this instance, whichever of their sockets sends.
                if (wait := presence.socket_write_wait(user.user_id)) > 0:
                    metrics.ws_errors.labels("rate_limited").inc()
                    conn.send(error_event(RateLimited(wait, "heartbeats too often")))
                    continue
                try:
                    await presence.heartbeat(
                        user,
                        conn_id,
                        status=frame.status,
                        last_active_ago_ms=frame.last_active_ago_ms,
                    )
                except CityError as exc:
                    conn.send(error_event(exc))
    finally:
        presence.sockets_per_user.release(user.user_id)
        metrics.presence_sockets.dec()
        await conn.stop()
        try:
            await presence.close_socket(conn, conn_id, clean=clean_close)
        except CityError:
            log.warning("presence of %s not updated on close: store unavailable", user.user_id)
