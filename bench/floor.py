"""The framework floors for HTTP posts: answering ``POST /city/rooms/{room}/messages`` with 201
and a Message, but storing and broadcasting nothing. The post scenario runs against them in the
same run as against the service, so the ratios say how much of a post's cost is storage and
fan-out and how much the HTTP stack.

- ``--kind fastapi``: uvicorn with httptools and uvloop, FastAPI, the request-id middleware,
  bearer-token verification, the same request and response models (the route the service
  served posts through until it had a lane of its own);
- ``--kind asgi``: the same server and middleware, token check and request model, without
  FastAPI: what the service's ``PostLane`` costs before it stores anything (the machine's HTTP
  limit for this stack).
- ``--kind rooms``: the ``asgi`` floor that also fans out, for the many-rooms scenario: room
  sockets at the service's path (``room.state``, then the room's messages), and each post's
  ``room.message`` framed once and written straight to the transports of its room's sockets,
  as the service's fan-out and the raw baseline write them. Still nothing stored, no rate
  limit, no bus: the most this stack (uvicorn's httptools and websockets-sansio protocols, the
  request middleware, the token check and request model) can deliver in that scenario
  (``bench/rooms_floor.py`` runs it beside the raw baseline).

    .venv/bin/python -m bench.floor --port 7201 [--kind asgi|rooms]
"""

import argparse
import itertools
import sys
from collections import defaultdict
from typing import Annotated, Any

import orjson
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.baseline import V2_FIELDS
from bench.common import SECRET
from daarion_city.core.clock import iso, utcnow
from daarion_city.core.metrics import Metrics
from daarion_city.edge.middleware import RequestContextMiddleware
from daarion_city.identity.principal import Principal
from daarion_city.identity.tokens import TokenAuthority
from daarion_city.realtime.transport import SCOPE_KEY, text_frame
from daarion_city.rooms.schemas import Message, MessageCreate


def message(n: int, room: str, who: Principal, body: MessageCreate) -> dict[str, Any]:
    return {
        "id": f"m_{n}",
        "room_id": f"room_city_{room}",
        "seq": n,
        "author_user_id": who.user_id,
        "author_agent_id": None,
        "username": who.name,
        "body": body.body,
        "client_msg_id": body.client_msg_id,
        "created_at": iso(utcnow()),
        **V2_FIELDS,
    }


def create_asgi_floor(*, rooms: bool = False) -> ASGIApp:
    authority = TokenAuthority(SECRET)
    seq = itertools.count(1)
    sockets: dict[str, set[Any]] = defaultdict(set)  # room -> its sockets' transports

    async def socket(scope: Scope, receive: Receive, send: Send) -> None:
        room = scope["path"].rsplit("/", 1)[-1]
        proto = scope.get(SCOPE_KEY)
        if proto is None or (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        state = {"event": "room.state", "room_id": room, "last_seq": 0}
        await send({"type": "websocket.send", "text": orjson.dumps(state).decode()})
        sockets[room].add(proto.transport)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets[room].discard(proto.transport)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and rooms:
            await socket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if rooms and scope["path"] == "/city/rooms":  # the load generator makes its rooms
            await receive()
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        event = await receive()
        body = MessageCreate.model_validate_json(event.get("body", b""))
        auth = next(v for k, v in scope["headers"] if k == b"authorization").decode()
        who = authority.verify(auth.partition(" ")[2].strip())
        room = scope["path"].split("/")[3]
        stored = message(next(seq), room, who, body)
        if rooms:
            frame = orjson.dumps({"event": "room.message", "room_id": room, "message": stored})
            data = text_frame(frame)
            for transport in sockets.get(room, ()):
                transport.write(data)
        answer = orjson.dumps(stored)
        headers = [
            (b"content-length", str(len(answer)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return RequestContextMiddleware(app, metrics=Metrics(), max_body=64 * 1024)


def create_floor_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware, metrics=Metrics(), max_body=64 * 1024)
    authority = TokenAuthority(SECRET)
    bearer = HTTPBearer(auto_error=True)
    seq = itertools.count(1)

    def user(
        creds: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
    ) -> Principal:
        return authority.verify(creds.credentials)

    @app.post("/city/rooms/{room}/messages", status_code=201, response_model=Message)
    async def post(
        room: str, body: MessageCreate, who: Annotated[Principal, Depends(user)]
    ) -> dict[str, Any]:
        return message(next(seq), room, who, body)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7201)
    parser.add_argument("--kind", choices=["fastapi", "asgi", "rooms"], default="fastapi")
    args = parser.parse_args()
    uvicorn.run(
        create_floor_app()
        if args.kind == "fastapi"
        else create_asgi_floor(rooms=args.kind == "rooms"),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        log_level="warning",
        access_log=False,
        # The service's socket protocol and options (edge/server.py): no compression.
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
