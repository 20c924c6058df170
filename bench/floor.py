"""The framework floor for HTTP posts: the service's own stack (uvicorn with httptools and uvloop,
FastAPI, the request-id middleware, bearer-token verification, the same request and response
models) answering ``POST /city/rooms/{room}/messages`` with 201 and a Message, but storing and
broadcasting nothing. The post scenario runs against it in the same run as against the service,
so the ratio says how much of a post's cost is storage and fan-out and how much the framework.

    .venv/bin/python -m bench.floor --port 7201
"""

import argparse
import itertools
import sys
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bench.common import SECRET
from daarion_city.auth import Principal, TokenAuthority
from daarion_city.clock import iso, utcnow
from daarion_city.metrics import Metrics
from daarion_city.middleware import RequestContextMiddleware
from daarion_city.rooms.schemas import Message, MessageCreate


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
        n = next(seq)
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
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7201)
    args = parser.parse_args()
    uvicorn.run(
        create_floor_app(),
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
