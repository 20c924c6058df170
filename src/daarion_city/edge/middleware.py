"""Pure ASGI middleware: request ids, the access log, request metrics and the body limits.

The body limit answers 413 ``payload_too_large`` from the ``Content-Length`` header before
anything is read, and for bodies without one, as soon as the bytes received pass the limit.
A JSON body (``application/json`` or ``*+json``) is then read whole (it is bounded), parsed
once and checked against the nesting and item caps (``CITY_MAX_JSON_DEPTH``/``_ITEMS``): one
that breaks them, or is not JSON, gets 422 ``validation_error`` before any route parses it
(Python's own parser would recurse on deep input until it fails with a 500).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from contextvars import Token

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daarion_city.core.logs import request_id
from daarion_city.core.metrics import Metrics
from daarion_city.core.validation import JsonLimits
from daarion_city.realtime.transport import remember_protocol

log = logging.getLogger("daarion_city.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def bind_request_id(scope: Scope) -> tuple[str, Token[str]]:
    """The request's id, set for the logs until the token is reset: the client's
    ``X-Request-ID`` when it is a safe token, else a new one. The one set-up of the middleware
    and of the socket lane (``edge/lanes.py``)."""
    incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    rid = incoming if _SAFE_ID.fullmatch(incoming) else secrets.token_hex(8)
    return rid, request_id.set(rid)


class _TooLarge(Exception):
    pass


def _too_large_body(limit: int) -> bytes:
    return orjson.dumps({"detail": f"request body over {limit} bytes", "code": "payload_too_large"})


def is_json(headers: dict[bytes, bytes]) -> bool:
    raw = headers.get(b"content-type", b"")
    ctype = raw.split(b";")[0].strip().lower()
    return ctype == b"application/json" or ctype.endswith(b"+json")


def _json_problem(body: bytes, limits: JsonLimits) -> bytes | None:
    """The 422 answer for a JSON body that is not JSON or breaks the caps, else None."""
    if not body.strip():
        return None  # no body: the route decides whether it needs one
    try:
        problem = limits.violation(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        problem, kind = f"the body is not valid JSON: {exc}", "json_invalid"
    else:
        kind = "json_limits"
    if problem is None:
        return None
    detail = [{"loc": ["body"], "msg": problem, "type": kind}]
    return orjson.dumps({"detail": detail, "code": "validation_error"})


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body: int,
        json_limits: JsonLimits | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.json_limits = json_limits or JsonLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid, token = bind_request_id(scope)
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

        async def respond(code: int, body: bytes) -> None:
            nonlocal status, response_started
            status, response_started = code, True
            await send(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", rid.encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        async def respond_too_large() -> None:
            await respond(413, _too_large_body(limit))

        headers: dict[bytes, bytes] = dict(scope["headers"])
        length = headers.get(b"content-length")
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

        app_receive: Receive = limited_receive
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE") and is_json(headers):
            body = b""
            with contextlib.suppress(_TooLarge):
                body = await read_body(limited_receive)
            if too_large:
                await respond_too_large()
                self._record(scope, status, started)
                return
            problem = _json_problem(body, self.json_limits)
            if problem is not None:  # the route is never called
                await respond(422, problem)
                self._record(scope, status, started)
                return
            app_receive = replay_body(body, receive)

        try:
            with contextlib.suppress(_TooLarge):
                await self.app(scope, app_receive, send_wrapper)
            if too_large and not response_started:
                await respond_too_large()
        finally:  # an unexpected error, answered 500 by the app or the server, is counted too
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


async def read_body(receive: Receive) -> bytes:
    """The whole request body; what came before the client left, if it left (the route then
    sees a short or empty body and answers)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's next events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
