"""``GET /asyncapi.json``: the AsyncAPI 3.0.0 document of the room and presence sockets.

Which frames each socket carries is said here, the one place that sees both domains (the room
socket relays presence's ``presence.update``; the presence socket carries the rooms' personal
frames); the frames' schemas come from their models (``rooms/frames.py``,
``presence/frames.py``, ``realtime/protocol.py``) and the close codes from
``realtime/closes.py``, through ``realtime/asyncapi.py``. The document is built once, on the
first request, and served with its ``ETag`` like the public reads.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, Request, Response

from daarion_city.core.answers import Encoded, public_read
from daarion_city.presence.frames import (
    PRESENCE_CLIENT_FRAMES,
    PRESENCE_ERRORS,
    PRESENCE_SERVER_FRAMES,
    PresenceUpdate,
)
from daarion_city.presence.ws import SOCKET_PATH as PRESENCE_PATH
from daarion_city.realtime import closes
from daarion_city.realtime.asyncapi import SocketDoc, asyncapi_document
from daarion_city.realtime.endpoint import SocketQuery
from daarion_city.realtime.protocol import FRAME_ERRORS, Auth, Pong
from daarion_city.rooms.frames import (
    PERSONAL_FRAMES,
    ROOM_CLIENT_FRAMES,
    ROOM_ERRORS,
    ROOM_SERVER_FRAMES,
)
from daarion_city.rooms.ws import SOCKET_PATH as ROOM_PATH
from daarion_city.rooms.ws import RoomQuery

PATH = "/asyncapi.json"
HOST = "127.0.0.1:7001"

# Close codes of both sockets, and those only the room socket sends (docs/API.md section 11).
_ROOM_ONLY = (closes.CLOSE_TRY_AGAIN, closes.CLOSE_BAD_REQUEST, closes.CLOSE_NOT_FOUND)
_BOTH = tuple(code for code in closes.CLOSES if code not in _ROOM_ONLY)

SOCKETS = (
    SocketDoc(
        key="room",
        address=ROOM_PATH,
        title="Room socket",
        description="A room's live timeline. The first frame is room.state; with since_seq the "
        "timeline events after it follow (or an error resync_required), then live frames with "
        "no gap and no repeat.",
        parameters={"room": "the room's id or slug"},
        query=RoomQuery,
        receives=(*ROOM_CLIENT_FRAMES, Auth),
        sends=(*ROOM_SERVER_FRAMES, PresenceUpdate, Pong),
        errors={**FRAME_ERRORS, **ROOM_ERRORS},
        closes=sorted((*_BOTH, *_ROOM_ONLY)),
    ),
    SocketDoc(
        key="presence",
        address=PRESENCE_PATH,
        title="Presence socket",
        description="Everyone's presence and the user's own unread counts and notifications. "
        "Opening it counts as a heartbeat; the first frames are presence.bulk_update (with "
        "connection_id) and unread.bulk.",
        parameters={},
        query=SocketQuery,
        receives=(*PRESENCE_CLIENT_FRAMES, Auth),
        sends=(*PRESENCE_SERVER_FRAMES, *PERSONAL_FRAMES, Pong),
        errors={**FRAME_ERRORS, **PRESENCE_ERRORS},
        closes=sorted(_BOTH),
    ),
)

DESCRIPTION = (
    "The room and presence WebSockets of DAARION City (docs/API.md sections 4, 6, 11, 12). "
    "Every frame, both ways, is one JSON text frame with a string `event`. The operations are "
    "the server's: `receive` takes the client's frames, `send` is what the server sends. A "
    "client frame's unknown keys are ignored and its types are strict; a server frame carries "
    "exactly the keys of its schema. Each socket's `error` message lists its codes. WebSocket "
    "close codes, which AsyncAPI has no field for, are in the extension `x-close-codes` "
    "(`code`, `meaning`, `reconnect`: whether to open the socket again, `advice`), and each "
    "channel's `x-close-codes` names those its socket sends."
)


@cache
def document(version: str) -> Encoded:
    """The document, encoded once (``version``: the app's)."""
    return Encoded.of(
        asyncapi_document(
            title="DAARION City sockets",
            version=version,
            description=DESCRIPTION,
            host=HOST,
            sockets=SOCKETS,
        )
    )


router = APIRouter(tags=["operations"])


@router.get(PATH, include_in_schema=False)
async def asyncapi(request: Request) -> Response:
    return public_read(request, document(request.app.version))
