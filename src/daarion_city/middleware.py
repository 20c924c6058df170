"""Pure ASGI middleware: request ids, the access log, request metrics and the body-size limit.

The body limit answers 413 ``payload_too_large`` from the ``Content-Length`` header before
anything is read, and for bodies without one, as soon as the bytes received pass the limit.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daarion_city.logs import request_id
from daarion_city.metrics import Metrics
from daarion_city.realtime.transport import remember_protocol

log = logging.getLogger("daarion_city.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _TooLarge(Exception):
    pass


def _too_large_body(limit: int) -> bytes:
    return orjson.dumps({"detail": f"request body over {limit} bytes", "code": "payload_too_large"})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else secrets.token_hex(8)
        token = request_id.set(rid)
        try:
            if scope["type"] == "websocket":
                remember_protocol(scope, send)
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, rid)
        finally:
            request_id.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = time.perf_counter()
        status = 500
        response_started = False
        too_large = False
        limit = self.max_body

        async def respond_too_large() -> None:
            nonlocal status, response_started
            status, response_started = 413, True
            body = _too_large_body(limit)
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", rid.encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await respond_too_large()
            self._record(scope, status, started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if too_large:
                return  # whatever the app answers to a cut body, the client gets the 413
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited_receive, send_wrapper)
        if too_large and not response_started:
            await respond_too_large()
        self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        method = scope["method"]
        self.metrics.http_requests.labels(method, str(status)).inc()
        self.metrics.http_latency.labels(method).observe(elapsed)
        log.info(
            "%s %s %s %.1fms",
            method,
            scope["path"],
            status,
            elapsed * 1000,
            extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
        )
