"""The room WebSocket ``/ws/city/rooms/{room}?token=...&since_seq=N``: parse frames, call the
room service, answer with frames. Close codes: 4400 bad query, 4401 auth, 4404 no such room,
4408 too slow, 4429 too many sockets, 1013 try again later (a store is unavailable); 1009 (frame
over the limit) comes from the server."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema
from starlette.websockets import WebSocket

from daarion_city.core.errors import CityError, NotFound
from daarion_city.core.provided import provided
from daarion_city.core.validation import MAX_SEQ
from daarion_city.realtime.caps import TooManySockets
from daarion_city.realtime.closes import CLOSE_BAD_REQUEST
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.endpoint import (
    SocketQuery,
    accept_user,
    close,
    error_event,
    refuse,
    socket_connection,
    socket_errors,
)
from daarion_city.realtime.protocol import PONG, FrameError, Ping, encode, error_frame
from daarion_city.rooms.frames import MessageSend, Typing, parse_room_frame
from daarion_city.rooms.service import ROOMS, RoomService

log = logging.getLogger(__name__)
router = APIRouter()
SOCKET_PATH = "/ws/city/rooms/{room}"  # served by the socket lane too (edge/lanes.py)


class RoomQuery(SocketQuery):
    """The room socket's query (``since_seq`` read by :func:`_since_seq`)."""

    since_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | SkipJsonSchema[None] = Field(
        None,
        description="resume: every timeline event after this seq (ASCII digits; else 4400), or "
        "an error resync_required",
    )


def _since_seq(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since_seq")
    if raw is None or raw == "":
        return None
    # ASCII digits only (int() would take "+1", " 1", "1_0" and other scripts' digits), and no
    # more than a seq column holds. ValueError is handled by the caller.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise ValueError(f"since_seq must be an integer 0..{MAX_SEQ}")
    return int(raw)


@router.websocket(SOCKET_PATH)
async def room_socket(websocket: WebSocket, room: str) -> None:
    user = await accept_user(websocket)
    if user is None:
        return
    rooms = provided(websocket, ROOMS)
    try:
        since_seq = _since_seq(websocket)
    except ValueError:
        await close(websocket, CLOSE_BAD_REQUEST, f"since_seq must be an integer 0..{MAX_SEQ}")
        return
    try:
        room_id = await rooms.resolve(room)
    except NotFound as exc:
        await refuse(websocket, exc, "room not found")
        return
    except CityError as exc:  # the database is overloaded or away (1013): retry later
        await refuse(websocket, exc)
        return
    try:
        (await rooms.policies.of(room_id)).check_banned(user)
    except CityError as exc:
        await refuse(websocket, exc)
        return
    try:
        rooms.sockets.reserve_socket(user)
    except TooManySockets as exc:
        await refuse(websocket, exc)
        return
    conn = socket_connection(websocket, user, room_id)
    rooms.metrics.room_sockets.inc()
    try:
        async with socket_errors(websocket, conn):
            await rooms.sockets.open_socket(conn, since_seq)
            # A ban committed while the socket opened: its notice may have come before the
            # socket was attached, so the policy (dropped by it) is asked again.
            try:
                (await rooms.policies.of(room_id)).check_banned(user)
            except CityError as exc:
                conn.expel(error_event(exc), exc.code)
            while True:
                message = await websocket.receive()
                # Closed by the server (too slow): what the client sent is not handled, so
                # nothing is stored that could not be acknowledged.
                if message["type"] == "websocket.disconnect" or conn.closing:
                    break
                await _handle(rooms, conn, message.get("text"))
    finally:
        rooms.metrics.room_sockets.dec()
        await conn.stop()
        rooms.sockets.release_socket(user)
        try:
            await rooms.sockets.close_socket(conn)
        except CityError:
            log.warning("room socket of %s closed while its store was unavailable", user.user_id)


async def _handle(rooms: RoomService, conn: Connection, text: str | None) -> None:
    try:
        frame = parse_room_frame(text, rooms.settings.json_limits)
    except FrameError as exc:
        rooms.metrics.ws_errors.labels(exc.code).inc()
        conn.send(error_frame(exc.code, exc.message))
        return
    if isinstance(frame, MessageSend):
        try:
            result = await rooms.commit.post(
                conn.user, conn.room_id, frame.body, frame.client_msg_id, frame.reply_to_seq
            )
        except CityError as exc:
            rooms.metrics.ws_errors.labels(exc.code).inc()
            conn.send(error_event(exc, client_msg_id=frame.client_msg_id))
            return
        conn.send(
            encode(
                {
                    "event": "room.message.ack",
                    "client_msg_id": frame.client_msg_id,
                    "message": result.message,
                }
            )
        )
    elif isinstance(frame, Typing):
        try:
            rooms.sockets.typing.set(conn.room_id, conn.user, frame.typing)
        except CityError as exc:  # the user's bucket is spent; the socket stays open
            rooms.metrics.ws_errors.labels(exc.code).inc()
            conn.send(error_event(exc))
    elif isinstance(frame, Ping):
        conn.send(PONG)
    # Legacy room.join / room.leave frames: accepted and ignored.
