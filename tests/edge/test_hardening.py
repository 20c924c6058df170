"""Limits and checks at the edge: browser origins (CORS and WebSocket upgrades), JSON caps on
bodies and frames, and sockets that authenticate by their first frame or are closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from daarion_city.realtime.origins import origin_allowed
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


# --- numbers and identifiers a client sends (issue 18, findings 4, 5 and 13) ---------------------
BIGINT = 2**63 - 1  # what a seq column holds


async def test_integers_past_what_the_store_holds_are_422_and_the_connection_lives(
    api: Api,
) -> None:
    alice = await api.guest("Alice")
    http = api.http
    msgs = "/city/rooms/general/messages"
    for params in (
        {"before_seq": BIGINT + 1},
        {"after_seq": BIGINT + 1},
        {"before_seq": 2**64},
        {"after_seq": 10**30},
        {"after_seq": -1},
        {"limit": 2**63},
    ):
        r = await http.get(msgs, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["code"] == "validation_error"
        # The same keep-alive connection answers the next request.
        assert (await http.get("/healthz")).status_code == 200, params
    for path, params in (
        ("/city/rooms", {"offset": 2**63}),
        ("/city/rooms", {"limit": 2**63}),
        ("/city/feed", {"limit": 2**63}),
    ):
        r = await http.get(path, params=params)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), (path, params)
    r = await http.get("/secondme/history", params={"limit": 2**63}, headers=alice.headers)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    # The largest seq there can be is a seq like any other.
    r = await http.get(msgs, params={"before_seq": BIGINT})
    assert r.status_code == 200, r.text
    assert len(r.json()["messages"]) == 1  # the seed message
    r = await http.get(msgs, params={"after_seq": BIGINT})
    assert r.json() == {"messages": [], "has_more": False}
    for value in (2**63, 10**12 + 1):
        r = await alice.post("/city/presence/heartbeat", {"last_active_ago_ms": value})
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), value
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        for value in (2**63, 2**64 - 1, 10**12 + 1, -1):
            await ws.send(f'{{"event": "presence.heartbeat", "last_active_ago_ms": {value}}}')
            assert (await ws.expect("error"))["code"] in ("invalid_frame", "invalid_json"), value
        await ws.send({"event": "ping"})
        await ws.expect("pong")


@pytest.mark.parametrize(
    "since_seq", [str(BIGINT + 1), str(2**64), "-1", "%2B1", "%201", "1_0", "١", "0x1"]
)
async def test_a_since_seq_a_seq_cannot_be_closes_4400(api: Api, since_seq: str) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("general", since_seq=since_seq) as ws:
        assert await ws.closed_with() == 4400
    async with alice.socket("general", since_seq=str(BIGINT)) as ws:  # ahead of the room
        await ws.expect("room.state")
        assert (await ws.expect("error"))["code"] == "resync_required"


# (method, path, params, headers?) -> (status, code): each would reach a query with a NUL
# (PostgreSQL: 500) or is no identifier of its kind at all.
BAD_IDENTIFIERS: list[tuple[str, str, dict[str, str], dict[str, str], int, str]] = [
    ("GET", "/city/rooms/%00", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/a%00b", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/a%00b/messages", {}, {}, 404, "room_not_found"),
    ("POST", "/city/rooms/%00/join", {}, {}, 404, "room_not_found"),
    ("POST", "/city/rooms/%00/leave", {}, {}, 404, "room_not_found"),
    ("POST", "/city/rooms/%00/messages", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/general%0A", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/room_city_general%0A/messages", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/GENERAL", {}, {}, 404, "room_not_found"),
    ("GET", "/city/rooms/" + "a" * 300, {}, {}, 404, "room_not_found"),
    ("GET", "/city/feed", {"before": "\x00"}, {}, 422, "validation_error"),
    ("GET", "/city/feed", {"before": "evt_city_welcome_001\n"}, {}, 422, "validation_error"),
    ("GET", "/city/feed", {"before": "m_city_welcome_001"}, {}, 422, "validation_error"),
    ("GET", "/city/feed/stream", {"since": "\x00"}, {}, 422, "validation_error"),
    ("GET", "/city/feed/stream", {"since": "x'; drop"}, {}, 422, "validation_error"),
    ("GET", "/city/feed/stream", {}, {"Last-Event-ID": "not an id"}, 422, "validation_error"),
    ("GET", "/city/presence/%00", {}, {}, 422, "validation_error"),
    ("GET", "/city/presence/u_alice%0A", {}, {}, 422, "validation_error"),
    ("GET", "/city/presence/%D0%BE%D0%BB%D0%B5%D0%BD%D0%B0", {}, {}, 422, "validation_error"),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "headers", "status", "code"),
    BAD_IDENTIFIERS,
    ids=[f"{c[0]} {c[1][:40]} {c[2]}{c[3]}" for c in BAD_IDENTIFIERS],
)
async def test_identifiers_of_no_possible_thing_get_a_typed_answer_without_a_query(
    api: Api,
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    alice = await api.guest("Alice")
    body = {"body": "hi"} if path.endswith("/messages") and method == "POST" else None
    r = await api.http.request(
        method, path, params=params, json=body, headers={**alice.headers, **headers}
    )
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    # The keep-alive connection still serves, and the rooms named the right way still answer.
    for ref in ("general", "room_city_general"):
        assert (await api.http.get(f"/city/rooms/{ref}/messages")).status_code == 200
    r = await api.http.get("/city/feed", params={"before": "evt_city_welcome_001"})
    assert r.status_code == 200, r.text


async def test_a_well_formed_unknown_event_id_starts_the_stream_live(api: Api) -> None:
    for query in ("since=evt_0123456789abcdef0123456789ab", "since=evt_city_welcome_001"):
        async with api.http.stream("GET", f"/city/feed/stream?{query}") as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                assert line == "retry: 3000"
                break


@pytest.mark.parametrize("ref", ["%00", "a%00b", "general%0A", "GENERAL", "room_city_"])
async def test_a_room_socket_for_no_possible_room_is_closed_4404_with_a_frame(
    api: Api, ref: str
) -> None:
    alice = await api.guest("Alice")
    async with alice.socket(ref) as ws:
        assert await ws.closed_with() == 4404
        assert ws.ws.protocol.close_rcvd is not None  # a close frame, not a dropped connection
    async with alice.socket("room_city_general") as ws:
        assert (await ws.expect("room.state"))["room_id"] == "room_city_general"


# --- names people see (issue 18, finding 9) -----------------------------------------------------
INVISIBLE_NAMES = [
    "\u200b\u200d\ufeff",  # zero-width characters only
    " \u200b ",
    "\u3164",  # Hangul filler
    "\u115f\u1160",
    "\u2800",  # Braille blank
    "\u2060\u00ad",
    "\ufe0f",
]
BAD_NAMES = [
    *INVISIBLE_NAMES,
    "Al\nice",
    "Alice\n",
    "Bob\tSmith",
    "evil\u202egnp.exe",  # right-to-left override
    "\u2067Alice\u2069",  # isolates
    "nul\x00",
]
IMPERSONATING = ["ag_system", "AG_System", "Ag_secondme_global", "  ag_x", "a\u200bg_system"]
GOOD_NAMES = ["Alice", "Олена", "مرحبا", "שלום עולם", "👨\u200d👩\u200d👧", "agnes", "bag_", "a g_"]


@pytest.mark.parametrize("name", BAD_NAMES + IMPERSONATING)
async def test_invisible_broken_and_agent_names_are_refused_to_guests(api: Api, name: str) -> None:
    r = await api.http.post("/auth/guest", json={"name": name})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error"), r.text


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invisible_and_broken_room_names_are_refused(api: Api, name: str) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms", {"slug": "named-room", "name": name})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error"), r.text
    assert (await api.http.get("/city/rooms/named-room")).status_code == 404


async def test_visible_names_in_any_script_are_kept(api: Api) -> None:
    for i, name in enumerate(GOOD_NAMES):
        user = await api.guest(name)
        assert user.name == name
        m = await user.say("general", f"hello {i}")
        assert m["username"] == name
        r = await user.post("/city/rooms", {"slug": f"room-{i}", "name": name})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name
    user = await api.guest("  Spaced  ")
    assert user.name == "Spaced"


@pytest.mark.parametrize("body", ["\u200b\u200d\ufeff", " \u2060 \n\u3164", "\u2800"])
async def test_bodies_blank_once_invisible_characters_are_removed_are_refused(
    api: Api, body: str
) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms/science/messages", {"body": body})
    assert (r.status_code, r.json()["code"]) == (422, "validation_error"), r.text
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        await ws.send({"event": "room.message.send", "body": body, "client_msg_id": "b"})
        assert (await ws.expect("error"))["code"] == "invalid_frame"
        for text in ("👨\u200d👩\u200d👧", "مرحبا بالعالم", "שלום", "ok\u200b"):
            await ws.send({"event": "room.message.send", "body": text})
            assert (await ws.expect("room.message.ack"))["message"]["body"] == text
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["body"] for m in page["messages"]] == [
        "👨\u200d👩\u200d👧",
        "مرحبا بالعالم",
        "שלום",
        "ok\u200b",
    ]


@pytest.mark.parametrize(
    "sub", ["ag_system", "AG_x", "u_alice\n", "u alice", "Олена", "u_" + "a" * 79, "", "a/b"]
)
async def test_a_token_whose_sub_is_no_user_id_is_refused(api: Api, sub: str) -> None:
    now = int(time.time())
    claims = {"sub": sub, "name": "Alice", "iat": now, "exp": now + 600}
    token = jwt.encode(claims, api.server.settings.city_jwt_secret.get_secret_value(), "HS256")
    r = await api.http.post(
        "/city/rooms/general/messages",
        json={"body": "as an agent"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized"), r.text
    async with open_socket(api.server, "/ws/city/rooms/general", token=token) as ws:
        assert await ws.closed_with() == 4401


@pytest.mark.parametrize("name", [*BAD_NAMES, *IMPERSONATING, 5])
async def test_a_token_name_people_should_not_see_falls_back_to_the_user_id(
    api: Api, name: object
) -> None:
    now = int(time.time())
    claims = {"sub": "u_named", "name": name, "iat": now, "exp": now + 600}
    token = jwt.encode(claims, api.server.settings.city_jwt_secret.get_secret_value(), "HS256")
    r = await api.http.post(
        "/city/rooms/general/messages",
        json={"body": "hello"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "u_named"
