"""A webhook receiver for the tests: a plain ASGI app served by uvicorn on a loopback port that
records every request and answers as told (``mode``): "ok" (204), "fail" (500) or "hang"
(answers only after ``hang`` seconds, past the sender's timeout). Stopped, its port refuses
connections; started again, it listens on the same port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from daarion_city.feed.signing import verify
from tests.support import serve_app

SECRET = "whsec-test-0123456789abcdef"
TIMED_OUT = 0  # the status recorded for a request answered after the sender gave up


@dataclass(frozen=True)
class Request:
    event_id: str | None
    signature: str | None
    content_type: str | None
    body: bytes
    status: int  # as answered (TIMED_OUT: too late to count)

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.body)
        return event

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


class Receiver:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.mode = "ok"
        self.hang = 3.0
        self.port = 0
        self.requests: list[Request] = []

    @property
    def url(self) -> str:
        assert self.port, "start the receiver once to learn its port"
        return f"http://127.0.0.1:{self.port}/hooks/city"

    def delivered(self) -> list[str]:
        """The ids of the events answered 2xx, in arrival order."""
        return [r.event_id or "" for r in self.requests if r.delivered]

    def verified(self) -> bool:
        return all(verify(self.secret, r.signature, r.body) for r in self.requests)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        async with serve_app(self, port=self.port, lifespan="off") as server:
            self.port = server.servers[0].sockets[0].getsockname()[1]
            yield self

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        mode = self.mode
        status = {"ok": 204, "fail": 500, "hang": TIMED_OUT}[mode]
        self.requests.append(
            Request(
                headers.get("x-city-event-id"),
                headers.get("x-city-signature"),
                headers.get("content-type"),
                body,
                status,
            )
        )
        if mode == "hang":
            await asyncio.sleep(self.hang)
        await send({"type": "http.response.start", "status": status or 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
