"""The HTTP contract, checked by schemathesis against a real server: every documented operation,
fuzzed with two authenticated users, answers no 5xx and only what its OpenAPI document says
(status codes, bodies, content types), and refuses a request without or with a bad token.

The service runs in uvicorn (lifespan and all) on its own event loop in a background thread, so
schemathesis' synchronous client can call it over a real socket. Second Me answers through the
``agents-core`` provider against a tiny HTTP peer of this module, so each invoke costs
milliseconds (the embedded model would cost a second per call)."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import jwt
import pytest
import schemathesis
from fastapi.routing import APIWebSocketRoute
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from daarion_city.app import create_app
from daarion_city.identity.tokens import TokenAuthority
from tests.cluster import free_port
from tests.conftest import make_settings
from tests.support import run_server, serve_app

SEED = 20_260_801
MAX_EXAMPLES = 20  # per operation in the fuzzing phase; the examples and coverage phases add theirs

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }
)


async def agents_invoke(request: Request) -> Response:
    """agents-core stand-in: echoes the prompt, so a user's text is in both of their turns."""
    body = await request.json()
    return JSONResponse({"response_text": f"echo: {body['message_text']}", "tokens_used": 3})


INTERNAL_TOKEN = "contract-internal-token-0123456789"
JWT_SECRET = "contract-jwt-secret-0123456789abcdef-0123"
AUTHORITY = TokenAuthority(JWT_SECRET)
# The two users of the fuzzing (an hour is far beyond the module's run).
TOKENS = [
    AUTHORITY.mint("u_contract_alice", "Alice", 3600).token,
    AUTHORITY.mint("u_contract_bob", "Bob", 3600).token,
]


async def homeserver_ok(request: Request) -> Response:
    """Homeserver stand-in for the gateway's calls (presence writes, puppet registration)."""
    return JSONResponse({})


@dataclass
class Running:
    base_url: str
    routes: list[tuple[str, str]]  # (method, or "WS", path) of every route the app serves
    bad_tokens: dict[str, str]  # for u_contract_alice, each of which must be refused


class BackgroundService:
    """The service in uvicorn on an event loop of its own thread, for synchronous clients."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.running: Running | None = None
        self._thread = threading.Thread(target=self._run, name="contract-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        agents_port = free_port()
        peers = Starlette(
            routes=[
                Route("/agents/invoke", agents_invoke, methods=["POST"]),
                Route("/_matrix/client/v3/presence/{user}/status", homeserver_ok, methods=["PUT"]),
                Route("/_matrix/client/v3/register", homeserver_ok, methods=["POST"]),
            ]
        )
        async with serve_app(peers, port=agents_port, lifespan="off"):
            peer_url = f"http://127.0.0.1:{agents_port}"
            settings = make_settings(
                f"sqlite:///{self._tmp / 'city.sqlite3'}",
                self._tmp / "data",
                agents_service_url=peer_url,
                matrix_homeserver_url=peer_url,
                matrix_server_name="localhost",
                matrix_hs_token="contract-hs-token-0123456789",
                matrix_gateway_internal_token=INTERNAL_TOKEN,
                city_jwt_secret=JWT_SECRET,
            )
            async with run_server(settings) as server:
                auth = server.resources.auth
                now = int(time.time())
                claims = {"sub": "u_contract_alice", "name": "Alice", "iat": now, "exp": now + 600}
                bad = {
                    "expired": auth.mint("u_contract_alice", "Alice", -60).token,
                    "other_secret": jwt.encode(claims, "another-secret-" + "x" * 32, "HS256"),
                    "unsigned": jwt.encode(claims, None, algorithm="none"),
                    "garbage": "not-a-jwt",
                }
                app = server.uvicorn.config.app
                app = getattr(app, "app", app)  # the FastAPI app behind the WebSocket lane
                self.running = Running(server.base_url, app_routes(app), bad)
                self._ready.set()
                await self._stop.wait()

    def __enter__(self) -> Running:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the service did not start within 60 s")
        if self._error is not None:
            raise self._error
        assert self.running is not None
        return self.running

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the service did not stop within 30 s"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with BackgroundService(tmp_path_factory.mktemp("contract")) as running:
        yield running


def app_routes(app: Any) -> list[tuple[str, str]]:
    """(method or "WS", path) of every route of ``app``, through its included routers."""
    # FastAPI >= 0.16x keeps included routers as branches of app.routes; older ones list the
    # routes flat. Either way each item has ``path`` and, for HTTP, ``methods``.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    found: list[tuple[str, str]] = []
    for route in flatten(app.routes) if flatten is not None else app.routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount):
            continue  # the web client's static files at "/"
        if isinstance(original, APIWebSocketRoute | WebSocketRoute):
            found.append(("WS", route.path))
            continue
        found.extend((method, route.path) for method in sorted(route.methods or ()))
    return found


def _openapi() -> dict[str, Any]:
    """The document the service serves at /openapi.json (test_the_schema_is_the_served_one
    checks that they are equal); building the app starts nothing, so this is cheap at import."""
    settings = make_settings("sqlite:///unused.sqlite3", Path("unused"))
    document: dict[str, Any] = create_app(settings).openapi()
    return document


# GET /city/feed/stream is an endless Server-Sent Events stream (a keep-alive every 15 s, never
# an end): a client that waits for the whole body never gets one; tests/feed/test_feed.py covers it.
# POST /secondme/invoke/stream ends after its `done` or `error` event, so it stays in.
schema = schemathesis.openapi.from_dict(_openapi(), config=CONFIG).exclude(
    method="GET", path="/city/feed/stream"
)


@schema.auth(refresh_interval=None)
class TwoUsers:
    """Alice and Bob in turn, call by call; the gateway's route gets its internal token
    instead. Given to schemathesis as its auth, so it knows the credentials: it leaves them off
    where a negative case drops them, and its ``ignored_auth`` check removes and breaks them."""

    def __init__(self) -> None:
        self._tokens = itertools.cycle(TOKENS)

    def get(self, case: Any, context: Any) -> str:
        return next(self._tokens)

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        if case.path == "/internal/matrix/presence/online":
            case.headers["X-Internal-Token"] = INTERNAL_TOKEN
        else:
            case.headers["Authorization"] = f"Bearer {data}"


@pytest.mark.timeout(60)
def test_the_schema_is_the_served_one(service: Running) -> None:
    served = httpx.get(service.base_url + "/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == _openapi()
    operations = {(m.upper(), p) for p, item in _openapi()["paths"].items() for m in item}
    assert len(operations) >= 20, operations  # a document that lost its routes fails here


# GET /city/presence/{user_id} matches these paths too (a user id is any string, and SPEC §3
# fixes both the record's path and these): a 405 there rightly says "Allow: GET, POST", while
# schemathesis reads each path template alone and expects "POST". The 405s of every other
# path, and every other check on these two, still run.
SHADOWED_BY_GET = {"/city/presence/heartbeat", "/city/presence/offline"}
# Without an access_token, the gateway sets only its own puppets' presence (@city_...:<server>):
# any other well-formed user id is refused 400 `not_in_namespace` (SPEC §6), a rule about the
# homeserver's namespace that the document states in words, not in a schema. So a schema-valid
# body may rightly get a 400 here; schema-invalid bodies must still be refused (that check runs).
NAMESPACE_RULE = "/internal/matrix/presence/online"
# Search (SPEC 12): a query with no word of 2 letters or digits is refused 422
# `query_too_short`, and a `before` that is not a cursor the search gave 422 `invalid_cursor`:
# rules the document states in words (a cursor is opaque), so a schema-valid request may
# rightly get a 422 here; schema-invalid ones must still be refused.
SEARCH_WORDS_RULE = "/city/search"


@pytest.mark.timeout(120)
@schema.parametrize()
def test_every_operation_keeps_its_contract(case: Any, service: Running) -> None:
    """All of schemathesis' checks: no 5xx, documented status codes, content types, headers
    and bodies, schema-valid input accepted and invalid input refused, 405 with a true
    ``Allow`` for undocumented methods, and 401 once the credentials are dropped or broken."""
    excluded = []
    if case.path in SHADOWED_BY_GET:
        excluded.append(checks.allow_header_conformance)
    if case.path in (NAMESPACE_RULE, SEARCH_WORDS_RULE):
        excluded.append(checks.positive_data_acceptance)
    case.call_and_validate(
        base_url=service.base_url,
        excluded_checks=excluded,
        timeout=10,
    )


# --- every route's authentication, route by route -----------------------------------------------

# SPEC §1: "Public without a token: GET /city/rooms, GET /city/rooms/{room},
# GET /city/rooms/{room}/messages, GET /city/feed, GET /city/presence, health and metrics.
# Everything else needs a token." Besides those, public here, each for the reason given:
PUBLIC = {
    # SPEC §1, word for word
    ("GET", "/city/rooms"),
    ("GET", "/city/rooms/{room}"),
    ("GET", "/city/rooms/{room}/messages"),
    ("GET", "/city/feed"),
    ("GET", "/city/presence"),
    # SPEC §12: the timeline's events, "public like the messages"
    ("GET", "/city/rooms/{room}/events"),
    # SPEC §11: message search ("Public")
    ("GET", "/city/search"),
    # SPEC §10: a room's owner and moderators are public
    ("GET", "/city/rooms/{room}/moderators"),
    # "health and metrics" (SPEC §7)
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    # the route that hands out tokens (SPEC §1)
    ("POST", "/auth/guest"),
    # the same public events as GET /city/feed, as a stream: EventSource cannot send headers
    ("GET", "/city/feed/stream"),
    # one record of the public list GET /city/presence (which already shows everyone online or
    # away); the web client and tests/presence/test_presence_api.py read it without a token
    ("GET", "/city/presence/{user_id}"),
    # SPEC §8: the page reads its settings (whether guests may sign in) before it has a token
    ("GET", "/city/config"),
    # the API's own documentation
    ("GET", "/openapi.json"),
    ("GET", "/asyncapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# Authenticated by the Matrix application-service API rather than a user's token: 401 without
# credentials, 403 M_FORBIDDEN with wrong ones (a bearer JWT is a wrong hs_token).
MATRIX_AS = {
    ("PUT", "/_matrix/app/v1/transactions/{txn_id}"),
    ("GET", "/_matrix/app/v1/users/{user_id}"),
}
PATH_VALUES = {
    "room": "general",
    "user_id": "u_contract_alice",
    "txn_id": "txn-1",
    "seq": "1",
    "emoji": "%F0%9F%91%8D",
    "report_id": "rep_unknown",
}
MAY_BE_HEAD_ONLY = {"HEAD"}  # served with GET; checked through GET


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


@pytest.mark.timeout(60)
def test_every_route_refuses_missing_and_bad_tokens(service: Running) -> None:
    http_routes = [(m, p) for m, p in service.routes if m not in {"WS", *MAY_BE_HEAD_ONLY}]
    assert len(http_routes) >= 25, http_routes
    assert set(http_routes) >= PUBLIC, PUBLIC - set(http_routes)  # no stale entry
    answered_without_token: set[tuple[str, str]] = set()
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        for method, path in http_routes:
            url = concrete(path)
            if (method, path) == ("GET", "/city/feed/stream"):
                with client.stream(method, url) as r:  # endless: the status line is enough
                    status = r.status_code
            else:
                status = client.request(method, url, json={}).status_code
            assert status < 500, (method, path, status)
            if status != 401:
                answered_without_token.add((method, path))
                continue
            for kind, token in service.bad_tokens.items():
                r = client.request(
                    method, url, json={}, headers={"Authorization": f"Bearer {token}"}
                )
                expected = 403 if (method, path) in MATRIX_AS else 401
                assert r.status_code == expected, (method, path, kind, r.text)
                if expected == 401 and path != "/internal/matrix/presence/online":
                    assert r.json()["code"] == "unauthorized", (method, path, kind, r.text)
        r = client.post(
            "/internal/matrix/presence/online", json={}, headers={"X-Internal-Token": "wrong"}
        )
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthorized"
        # Credentials with bytes beyond ASCII (HTTP headers are latin-1) are wrong, not a crash.
        odd = "caf\xe9".encode("latin-1")
        r = client.post(
            "/internal/matrix/presence/online", json={}, headers={b"X-Internal-Token": odd}
        )
        assert r.status_code == 401, r.text
        for method, path in sorted(MATRIX_AS):
            r = client.request(
                method, concrete(path), json={}, headers={b"Authorization": b"Bearer " + odd}
            )
            assert r.status_code == 403, (method, path, r.text)
        r = client.get("/secondme/history", headers={b"Authorization": b"Bearer " + odd})
        assert r.status_code == 401, r.text
    protected = set(http_routes) - answered_without_token
    # Exactly the public routes answer without a token; every other one (user routes, the
    # gateway's internal and application-service routes) is refused.
    assert answered_without_token == PUBLIC, answered_without_token ^ PUBLIC
    assert {("GET", "/secondme/history"), ("POST", "/city/rooms/{room}/messages")} <= protected
    assert MATRIX_AS | {("POST", "/internal/matrix/presence/online")} <= protected


def ws_close_code(url: str, first_frame: str | None = None) -> int | None:
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        if first_frame is not None:
            ws.send(first_frame)
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.timeout(60)
def test_every_socket_refuses_missing_and_bad_tokens(service: Running) -> None:
    sockets = [p for m, p in service.routes if m == "WS"]
    assert len(sockets) == 2, sockets  # room and presence sockets (SPEC §2, §3)
    base = service.base_url.replace("http://", "ws://")
    for path in sockets:
        url = base + concrete(path)
        # No token anywhere: any first frame but {"event": "auth"} is refused.
        assert ws_close_code(url, '{"event": "ping"}') == 4401, path
        for kind, token in service.bad_tokens.items():
            assert ws_close_code(f"{url}?token={token}") == 4401, (path, kind)
            frame = f'{{"event": "auth", "token": "{token}"}}'
            assert ws_close_code(url, frame) == 4401, (path, kind, "auth frame")
