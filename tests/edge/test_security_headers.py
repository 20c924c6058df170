"""Every answer carries the security headers: a strict Content-Security-Policy (no inline
script or style, no framing), nosniff, X-Frame-Options and Referrer-Policy, on the page, static
files, the API, errors, the post lane and what the server writes itself. (The page's own check
in a browser, with no policy violation, is in test_web.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from daarion_city.edge.lanes import PostLane
from tests.support import Api

pytestmark = pytest.mark.timeout(60)

DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "object-src": "'none'",
}


@pytest.fixture
def backend() -> str:
    return "sqlite"


def assert_secured(r: httpx.Response) -> None:
    where = f"{r.request.method} {r.request.url.path} ({r.status_code})"
    for name in (
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ):
        assert len(r.headers.get_list(name)) == 1, f"{name} on {where}"
    policy = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert policy == DIRECTIVES, where
    assert r.headers["x-content-type-options"] == "nosniff", where
    assert r.headers["x-frame-options"] == "DENY", where
    assert r.headers["referrer-policy"] == "no-referrer", where


async def test_the_page_static_files_and_the_api_carry_the_security_headers(api: Api) -> None:
    page = await api.http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert_secured(page)
    for path in ("/app.js", "/app.css", "/city/rooms", "/healthz", "/openapi.json"):
        r = await api.http.get(path)
        assert r.status_code == 200, path
        assert_secured(r)


async def test_errors_carry_the_security_headers(api: Api) -> None:
    alice = await api.guest("Alice")
    answers = [
        await api.http.get("/city/rooms/no-such-room"),  # 404 from the app
        await api.http.get("/no-such-file.txt"),  # 404 from the static files
        await api.http.post("/city/rooms/general/messages", json={"body": "hi"}),  # 401
        await alice.post("/city/rooms/general/messages", {"body": ""}),  # 422 from the route
        await api.http.post(  # 422 from the middleware's JSON check
            "/city/rooms", content=b"{", headers={"content-type": "application/json"}
        ),
        await api.http.post(  # 413 from the middleware
            "/city/rooms", content=b"x" * 200_000, headers={"content-type": "application/json"}
        ),
    ]
    assert [r.status_code for r in answers] == [404, 404, 401, 422, 422, 413]
    for r in answers:
        assert_secured(r)


async def test_a_post_served_by_the_post_lane_carries_the_security_headers(api: Api) -> None:
    app: Any = api.server.uvicorn.config.app
    while not isinstance(app, PostLane):  # the lane is in front of the app on this server
        app = getattr(app, "http", None) or app.app
    alice = await api.guest("Alice")
    first = await alice.post("/city/rooms/general/messages", {"body": "hi", "client_msg_id": "c1"})
    again = await alice.post("/city/rooms/general/messages", {"body": "hi", "client_msg_id": "c1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert_secured(first)
    assert_secured(again)


async def test_what_the_server_writes_itself_carries_the_security_headers(api: Api) -> None:
    for raw in (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # 431
        b"NOT HTTP AT ALL\r\n\r\n",  # 400
    ):
        reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
        assert "content-security-policy: default-src 'self'" in head, head
        assert "x-content-type-options: nosniff" in head, head
