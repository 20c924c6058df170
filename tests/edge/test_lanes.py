"""The lanes answer as the routes do: the server calls the socket lane and the post lane
(``edge/lanes.py``) in front of FastAPI, and an app built with ``lanes=False`` serves every
request through its router. Both are run side by side, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import Api, open_socket


async def test_posting_answers_the_same_with_and_without_the_post_lane(
    api: Api, settings: Any
) -> None:
    """The server posts messages through ``PostLane`` (edge/lanes.py), in front of FastAPI's
    router; the route itself answers whatever the lane leaves to it. Both give the same
    answers: the message, the replay, and every error."""
    from daarion_city.app import create_app
    from daarion_city.edge.lanes import PostLane
    from tests.support import Server, serve_app

    assert _lanes(api.server.uvicorn.config.app, PostLane)
    plain = create_app(
        settings.model_copy(update={"city_data_dir": settings.city_data_dir / "b"}), lanes=False
    )
    assert not _lanes(plain.state.lane, PostLane)
    alice = await api.guest("Alice")
    auth = {"Authorization": f"Bearer {alice.token}"}
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("science", auth, b'{"body": "hi", "client_msg_id": "CMID"}'),
        ("science", auth, b'{"body": "hi", "client_msg_id": "CMID"}'),  # the replay
        ("science", auth, b'{"body": "no key"}'),
        ("science", {}, b'{"body": "hi"}'),
        ("science", {"Authorization": "Basic eDp5"}, b'{"body": "hi"}'),
        ("science", {"Authorization": "Bearer nope"}, b'{"body": "hi"}'),
        ("science", {"Authorization": "bearer  " + alice.token}, b'{"body": "lower"}'),
        ("science", auth, b"{}"),
        ("science", auth, b"[]"),
        ("science", auth, b'"hi"'),
        ("science", auth, b'{"body": ""}'),
        ("science", auth, b'{"body": "hi", "author_user_id": "u_mallory"}'),
        ("science", auth, b'{"body": "hi", "client_msg_id": 5}'),
        ("nowhere", auth, b'{"body": "hi"}'),
        ("nowhere", {}, b"{}"),
    ]
    answers: dict[str, list[tuple[int, str | None, Any]]] = {}
    async with serve_app(plain.state.lane, ws="websockets-sansio", lifespan="on") as served:
        port = served.servers[0].sockets[0].getsockname()[1]
        bare = Server(settings, "127.0.0.1", port, served, plain.state.resources)
        for label, server in (("lane", api.server), ("route", bare)):
            got = answers.setdefault(label, [])
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                for room, headers, body in cases:
                    r = await http.post(
                        f"/city/rooms/{room}/messages",
                        content=body.replace(b"CMID", label.encode()),
                        headers={"content-type": "application/json", **headers},
                    )
                    answer = r.json()
                    if r.status_code == 201:  # the same message but for what differs by run
                        for varying in ("id", "seq", "created_at"):
                            answer.pop(varying)
                        if answer["client_msg_id"] == label:
                            answer["client_msg_id"] = "CMID"
                    got.append((r.status_code, r.headers.get("idempotent-replayed"), answer))
    assert answers["lane"] == answers["route"]
    statuses = [status for status, _, _ in answers["lane"]]
    assert statuses == [201, 201, 201, 401, 401, 401, 201, 422, 422, 422, 422, 422, 422, 404, 401]
    assert [replayed for _, replayed, _ in answers["lane"]][:3] == [None, "true", None]


async def test_reactions_answer_the_same_with_and_without_the_lane(api: Api, settings: Any) -> None:
    """``PostLane`` also serves reaction changes the route would take as they are; the route
    answers the rest. Both give the same answers, errors included."""
    from daarion_city.app import create_app
    from tests.support import Server, serve_app

    plain = create_app(
        settings.model_copy(update={"city_data_dir": settings.city_data_dir / "b"}), lanes=False
    )
    alice = await api.guest("Alice")
    auth = {"Authorization": f"Bearer {alice.token}"}
    thumbs = "%F0%9F%91%8D"
    cases: list[tuple[str, str, str, dict[str, str]]] = [
        ("PUT", "SEQ", thumbs, auth),
        ("PUT", "SEQ", thumbs, auth),  # again: nothing changes
        ("PUT", "SEQ", ":tada:", auth),
        ("DELETE", "SEQ", thumbs, auth),
        ("DELETE", "SEQ", thumbs, auth),
        ("PUT", "SEQ", "ab", auth),
        ("PUT", "SEQ", "x" * 65, auth),
        ("PUT", "0", thumbs, auth),
        ("PUT", "abc", thumbs, auth),
        ("PUT", "-1", thumbs, auth),
        ("PUT", "9" * 30, thumbs, auth),
        ("PUT", "999999", thumbs, auth),
        ("PUT", "GONE", thumbs, auth),
        ("DELETE", "GONE", thumbs, auth),
        ("PUT", "SEQ", thumbs, {}),
        ("PUT", "SEQ", thumbs, {"Authorization": "Bearer nope"}),
    ]
    answers: dict[str, list[tuple[int, Any]]] = {}
    async with serve_app(plain.state.lane, ws="websockets-sansio", lifespan="on") as served:
        port = served.servers[0].sockets[0].getsockname()[1]
        bare = Server(settings, "127.0.0.1", port, served, plain.state.resources)
        for label, server in (("lane", api.server), ("route", bare)):
            seq = str((await alice.say("science", f"react here, {label}"))["seq"])
            gone = str((await alice.say("science", "deleted"))["seq"])
            r = await alice.api.http.delete(f"/city/rooms/science/messages/{gone}", headers=auth)
            assert r.status_code == 200
            got = answers.setdefault(label, [])
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                for method, at, emoji, headers in cases:
                    at = at.replace("SEQ", seq).replace("GONE", gone)
                    path = f"/city/rooms/science/messages/{at}/reactions/{emoji}"
                    r = await http.request(method, path, headers=headers)
                    answer = r.json()
                    if r.status_code == 200:
                        assert answer.pop("seq") == int(seq)
                    got.append((r.status_code, answer))
            r = await alice.api.http.put(
                f"/city/rooms/nowhere/messages/{seq}/reactions/{thumbs}", headers=auth
            )
            got.append((r.status_code, r.json()))
    assert answers["lane"] == answers["route"]
    statuses = [status for status, _ in answers["lane"]]
    assert statuses == [200] * 5 + [422] * 6 + [404, 409, 409, 401, 401, 404]
    assert answers["lane"][3][1]["reactions"] == [
        {"emoji": ":tada:", "count": 1, "users": [alice.user_id]}
    ]


def _lanes(asgi: Any, kind: type) -> bool:
    """Whether the chain of ASGI layers in front of the app holds a ``kind``."""
    while asgi is not None and not isinstance(asgi, kind):
        asgi = getattr(asgi, "http", None) or getattr(asgi, "app", None)
    return asgi is not None


async def test_sockets_work_with_and_without_the_lane(api: Api, settings: Any) -> None:
    """The server calls the WebSocket lane first (edge/lanes.py); the FastAPI routes to the
    same handlers serve the app without it. Both: state, ack, broadcast, close codes."""
    from daarion_city.app import create_app
    from daarion_city.edge.lanes import SocketLane
    from tests.support import Server, serve_app

    alice = await api.guest("Alice")
    assert isinstance(
        api.server.resources is not None and api.server.uvicorn.config.app, SocketLane
    )
    other = create_app(
        settings.model_copy(update={"city_data_dir": settings.city_data_dir / "b"}), lanes=False
    )
    assert not isinstance(other.state.lane, SocketLane)
    async with serve_app(other.state.lane, ws="websockets-sansio", lifespan="on") as plain:
        port = plain.servers[0].sockets[0].getsockname()[1]
        bare = Server(settings, "127.0.0.1", port, plain, other.state.resources)
        for i, server in enumerate((api.server, bare)):
            async with (
                open_socket(server, "/ws/city/rooms/general", token=alice.token) as ws,
                open_socket(server, "/ws/city/presence", token=alice.token) as presence,
            ):
                await ws.expect("room.state")
                await presence.expect("presence.bulk_update")
                cmid = f"lane-{i}"
                await ws.send({"event": "room.message.send", "body": "hi", "client_msg_id": cmid})
                seen = set()
                while seen != {"room.message.ack", "room.message"}:  # in either order
                    frame = await ws.recv()
                    if (frame.get("message") or {}).get("client_msg_id") == cmid:
                        seen.add(frame["event"])
            async with open_socket(server, "/ws/city/rooms/nowhere", token=alice.token) as ws:
                assert await ws.closed_with() == 4404
            async with open_socket(server, "/ws/city/rooms/general") as ws:
                await ws.send({"event": "ping"})
                assert await ws.closed_with() == 4401
