"""The fast lanes: requests served in front of the HTTP framework, as its routes would serve them.

Sockets (:class:`SocketLane`). An idle socket keeps its ASGI call alive for as long as it is open,
and with it every frame of the stack it came through: with FastAPI's router, exception middleware
and exit stacks that is about 12 KiB of Python objects per socket (measured with tracemalloc,
bench/RESULTS.md), more than the socket's own state. The lane is a pure ASGI callable that
uvicorn calls first: the room and presence socket paths go straight to their handlers (the same
functions FastAPI routes to when the app is served without the lane), with what the skipped
layers provided (the app in the scope, the request id, the server's protocol for the fan-out fast
path); everything else, HTTP and lifespan included, goes on unchanged to ``http``: the HTTP
middleware in front of the app (``edge/front.py``).

Posts and reaction changes (:class:`PostLane`). A post the route would accept as it is (a JSON
body that ``MessageCreate`` validates, a bearer token that verifies) is served without FastAPI's
routing, dependency solving and request objects, which cost more server time per post than
storing and broadcasting it (bench/RESULTS.md); so is a reaction added or removed (``PUT`` and
``DELETE .../reactions/{emoji}`` with a seq of digits in range and an emoji of 1 to 64
characters, as the route's parameters take them). Every other request, malformed ones included,
goes on to the route, so each error has one definition.

What the lanes share with the routes: their paths (the routers' own constants, matched by the
pattern Starlette compiles from them, in full), the bearer token
(``identity/http.bearer_credentials``, the parsing of the ``CurrentUser`` dependency) and the
answers to errors (``core/errors.error_answer``, the installed handlers' mapping). The tests
compare each lane with its route (``lanes=False``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import Token
from re import Match

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from daarion_city.core.errors import Sanctioned, Unauthorized, error_answer
from daarion_city.core.logs import request_id
from daarion_city.core.provided import Provided
from daarion_city.core.validation import MAX_SEQ
from daarion_city.edge.middleware import bind_request_id, is_json, read_body, replay_body
from daarion_city.identity.http import bearer_credentials
from daarion_city.identity.tokens import AUTH
from daarion_city.presence import ws as presence_ws
from daarion_city.realtime.transport import remember_protocol
from daarion_city.rooms import http as rooms_http
from daarion_city.rooms import ws as rooms_ws
from daarion_city.rooms.http import MAX_EMOJI_PARAM
from daarion_city.rooms.schemas import MessageCreate
from daarion_city.rooms.service import ROOMS

RoomHandler = Callable[[WebSocket, str], Awaitable[None]]
PresenceHandler = Callable[[WebSocket], Awaitable[None]]
ROOM_SOCKET = compile_path(rooms_ws.SOCKET_PATH)[0]
PRESENCE_SOCKET = presence_ws.SOCKET_PATH
POST_MESSAGE = compile_path(rooms_http.PREFIX + rooms_http.MESSAGES_PATH)[0]
REACTION = compile_path(rooms_http.PREFIX + rooms_http.REACTION_PATH)[0]


class SocketLane:
    def __init__(
        self,
        app: FastAPI,
        *,
        http: ASGIApp | None = None,
        room: RoomHandler | None = None,
        presence: PresenceHandler | None = None,
    ) -> None:
        self.app = app
        self.http: ASGIApp = http or app
        self.room = room
        self.presence = presence

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"]
            if self.presence is not None and path == PRESENCE_SOCKET:
                token = self._enter(scope, send)
                try:
                    await self.presence(WebSocket(scope, receive, send))
                finally:
                    request_id.reset(token)
                return
            if self.room is not None and (match := ROOM_SOCKET.fullmatch(path)) is not None:
                token = self._enter(scope, send)
                try:
                    await self.room(WebSocket(scope, receive, send), match["room"])
                finally:
                    request_id.reset(token)
                return
        await self.http(scope, receive, send)

    def _enter(self, scope: Scope, send: Send) -> Token[str]:
        """What the skipped layers would have done for the socket."""
        scope["app"] = self.app
        remember_protocol(scope, send)
        return bind_request_id(scope)[1]


_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")


class PostLane:
    """``POST /city/rooms/{room}/messages`` for requests the route would accept as they are.

    Pure ASGI, inside the request-context middleware (request id, body limits, metrics, access
    log), which has already read and checked a JSON body. The answer is the route's: 201 with
    the message (``Idempotent-Replayed: true`` for a replay) or the domain error the service
    raised. A request without a bearer token that verifies, or with a body that is not JSON or
    that ``MessageCreate`` refuses, goes on to the app and its route, untouched."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                match = POST_MESSAGE.fullmatch(scope["path"])
                if match is not None and is_json(dict(scope["headers"])):
                    body = await read_body(receive)
                    if await self._serve(scope, receive, send, match["room"], body):
                        return
                    receive = replay_body(body, receive)
            elif method in ("PUT", "DELETE"):
                match = REACTION.fullmatch(scope["path"])
                if match is not None and await self._react(scope, receive, send, match):
                    return
        await self.app(scope, receive, send)

    async def _react(self, scope: Scope, receive: Receive, send: Send, match: Match[str]) -> bool:
        """A reaction added or removed: answered (True), or left to the app (False)."""
        seq, emoji = match["seq"], match["emoji"]
        if not (seq.isascii() and seq.isdigit() and 1 <= int(seq) <= MAX_SEQ):
            return False
        if not 1 <= len(emoji) <= MAX_EMOJI_PARAM:
            return False
        credentials = bearer_credentials(scope["headers"])
        if credentials is None:
            return False
        values: Provided = self.app.state.provided
        try:
            user = values[AUTH].verify(credentials)
        except (Unauthorized, Sanctioned):
            return False  # the route answers it
        add = scope["method"] == "PUT"
        try:
            answer = await values[ROOMS].timeline.set_reaction(
                user, match["room"], int(seq), emoji, add=add
            )
        except Exception as exc:  # as the app's error handlers answer it
            await error_answer(scope, exc)(scope, receive, send)
            return True
        await _send_json(send, 200, orjson.dumps(answer))
        return True

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, room: str, body: bytes
    ) -> bool:
        """Answer the request (True), or leave it to the app (False)."""
        credentials = bearer_credentials(scope["headers"])
        if credentials is None:
            return False
        values: Provided = self.app.state.provided
        try:
            user = values[AUTH].verify(credentials)
            data = MessageCreate.model_validate_json(body)
        except (Unauthorized, Sanctioned, ValidationError):
            return False  # the route answers it
        try:
            result = await values[ROOMS].commit.post(
                user, room, data.body, data.client_msg_id, data.reply_to_seq
            )
        except Exception as exc:  # as the app's error handlers answer it
            await error_answer(scope, exc)(scope, receive, send)
            return True
        await _send_json(send, 201, orjson.dumps(result.message), replayed=not result.created)
        return True


async def _send_json(send: Send, status: int, answer: bytes, *, replayed: bool = False) -> None:
    start: list[tuple[bytes, bytes]] = [(b"content-length", str(len(answer)).encode()), _JSON]
    if replayed:
        start.append(_REPLAYED)
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": answer})
