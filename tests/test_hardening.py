"""Limits and checks at the edge: browser origins (CORS and WebSocket upgrades), JSON caps on
bodies and frames, and sockets that authenticate by their first frame or are closed."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from daarion_city.origins import origin_allowed
from tests.support import Api, open_socket

pytestmark = pytest.mark.timeout(60)


def test_origin_rule() -> None:
    allowed = ["https://city.example", "http://localhost:5173"]
    assert origin_allowed(None, "api.example", allowed)  # not a browser
    assert origin_allowed("https://city.example", "api.example", allowed)
    assert origin_allowed("HTTPS://City.Example/", "api.example", allowed)
    assert origin_allowed("http://api.example:7001", "api.example:7001", [])  # same origin
    assert not origin_allowed("https://evil.example", "api.example", allowed)
    assert not origin_allowed("null", "api.example", allowed)
    assert not origin_allowed("http://api.example:7002", "api.example:7001", [])
    assert origin_allowed("https://anything.example", "api.example", ["*"])


@pytest.mark.parametrize("settings_overrides", [{"city_allowed_origins": "https://city.example"}])
async def test_cross_site_sockets_are_refused_and_cors_names_only_allowed_origins(
    api: Api,
) -> None:
    alice = await api.guest("Alice")
    url = api.server.ws_url(f"/ws/city/rooms/general?token={alice.token}")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    for origin in ("https://city.example", f"http://127.0.0.1:{api.server.port}", None):
        async with connect(url, origin=origin, compression=None) as ws:  # type: ignore[arg-type]
            assert orjson.loads(await ws.recv())["event"] == "room.state"

    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = await api.http.options(
        "/city/rooms/general/messages", headers={"Origin": "https://city.example", **preflight}
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://city.example"
    assert "access-control-allow-credentials" not in r.headers
    r = await api.http.options(
        "/city/rooms/general/messages", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in r.headers
    r = await api.http.get("/city/rooms", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_json_bodies_over_the_caps_get_422_before_any_route(api: Api) -> None:
    alice = await api.guest("Alice")
    path = "/city/rooms/general/messages"
    cases: list[bytes] = [
        b"[" * 30_000 + b"]" * 30_000,  # would make Python's json recurse until it fails
        orjson.dumps({"body": "hi", "extra": _nested(40)}),
        orjson.dumps({"body": "hi", "extra": list(range(5000))}),
        b'{"body": "unterminated',
        b"\xff\xfe not utf-8",
    ]
    for raw in cases:
        r = await api.http.post(
            path, content=raw, headers={**alice.headers, "Content-Type": "application/json"}
        )
        assert r.status_code == 422, (raw[:40], r.text)
        assert r.json()["code"] == "validation_error"
    # Within the caps, the same route works, and nothing above was stored.
    r = await alice.post(path, {"body": "fine", "client_msg_id": "ok-1"})
    assert r.status_code == 201
    page = (await api.http.get(f"{path}?limit=200")).json()
    assert [m["body"] for m in page["messages"] if m["author_user_id"] == alice.user_id] == ["fine"]


async def test_frames_over_the_json_caps_get_an_error_event(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("general") as ws:
        await ws.expect("room.state")
        await ws.send({"event": "ping", "deep": _nested(40)})
        assert (await ws.expect("error"))["code"] == "invalid_frame"
        await ws.send({"event": "ping", "many": list(range(5000))})
        assert (await ws.expect("error"))["code"] == "invalid_frame"
        await ws.send("[" * 20_000 + "]" * 20_000)
        assert (await ws.expect("error"))["code"] in ("invalid_json", "invalid_frame")
        await ws.send({"event": "ping"})
        await ws.expect("pong")


async def test_a_socket_may_authenticate_with_its_first_frame(api: Api) -> None:
    alice = await api.guest("Alice")
    async with open_socket(api.server, "/ws/city/rooms/general") as ws:
        await ws.send({"event": "auth", "token": alice.token})
        state = await ws.expect("room.state")
        assert state["room_id"] == "room_city_general"
        await ws.send({"event": "room.message.send", "body": "by frame", "client_msg_id": "f1"})
        ack = await ws.expect("room.message.ack", client_msg_id="f1")
        assert ack["message"]["author_user_id"] == alice.user_id
    async with open_socket(api.server, "/ws/city/presence") as ws:
        await ws.send({"event": "auth", "token": alice.token})
        await ws.expect("presence.bulk_update")


@pytest.mark.parametrize(
    "first",
    [
        {"event": "room.message.send", "body": "before auth"},
        {"event": "auth", "token": "not-a-jwt"},
        {"event": "auth"},
        "not json",
        b"\x00\x01 binary",
    ],
)
async def test_anything_but_a_valid_auth_frame_first_closes_4401(api: Api, first: Any) -> None:
    async with open_socket(api.server, "/ws/city/rooms/general") as ws:
        await ws.send(first)
        assert await ws.closed_with() == 4401
    page = (await api.http.get("/city/rooms/general/messages")).json()
    assert all(m["body"] != "before auth" for m in page["messages"])


@pytest.mark.parametrize("settings_overrides", [{"city_ws_auth_timeout": 0.5}])
async def test_a_silent_unauthenticated_socket_is_closed(api: Api) -> None:
    loop = asyncio.get_running_loop()
    async with open_socket(api.server, "/ws/city/presence") as ws:
        started = loop.time()
        assert await ws.closed_with(10) == 4401
        assert loop.time() - started < 5  # the setting, not a client-side timeout
