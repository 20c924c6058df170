"""The WebSocket lane: the service's sockets dispatched in front of the HTTP framework.

An idle socket keeps its ASGI call alive for as long as it is open, and with it every frame
of the stack it came through: with FastAPI's router, exception middleware and exit stacks that
is about 12 KiB of Python objects per socket (measured with tracemalloc, bench/RESULTS.md),
more than the socket's own state. The lane is a pure ASGI callable that uvicorn calls first:
the room and presence socket paths go straight to their handlers (the same functions FastAPI
routes to when the app is served without the lane), with what the skipped layers provided (the
app in the scope, the request id, the server's protocol for the fan-out fast path); everything
else, HTTP and lifespan included, goes on unchanged to ``http``: the HTTP middleware in front
of the app (``daarion_city.app.front``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import Token

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from daarion_city.logs import request_id
from daarion_city.middleware import request_id_of
from daarion_city.realtime.transport import remember_protocol

RoomHandler = Callable[[WebSocket, str], Awaitable[None]]
PresenceHandler = Callable[[WebSocket], Awaitable[None]]
ROOMS = "/ws/city/rooms/"
PRESENCE = "/ws/city/presence"


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
            if self.presence is not None and path == PRESENCE:
                token = self._enter(scope, send)
                try:
                    await self.presence(WebSocket(scope, receive, send))
                finally:
                    request_id.reset(token)
                return
            room = path[len(ROOMS) :] if path.startswith(ROOMS) else ""
            if self.room is not None and room and "/" not in room:
                token = self._enter(scope, send)
                try:
                    await self.room(WebSocket(scope, receive, send), room)
                finally:
                    request_id.reset(token)
                return
        await self.http(scope, receive, send)

    def _enter(self, scope: Scope, send: Send) -> Token[str]:
        """What the skipped layers would have done for the socket."""
        scope["app"] = self.app
        remember_protocol(scope, send)
        return request_id.set(request_id_of(scope))
