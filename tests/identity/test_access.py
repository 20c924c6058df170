"""Access: every route and socket that names a user's data acts on the token's user only.

Alice is the victim and Bob the attacker. For Second Me, presence, room membership and message
authorship, Bob tries to reach Alice's data (her id in bodies, query strings and frames, her
socket's connection id, her idempotency key) and must get an error or act on his own data, with
nothing of hers in any answer. Tokens that are expired, signed with another secret or unsigned
get 401 over HTTP and close 4401 on both sockets. On SQLite and PostgreSQL, through a real server.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.cluster import free_port
from tests.support import Api, User, open_socket, serve_app

pytestmark = pytest.mark.timeout(60)


class Agents:
    """agents-core stand-in over real HTTP: echoes the prompt and records each request, so a
    user's text is in both of their turns and we can see what context went to the agent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []

    async def invoke(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        return JSONResponse({"response_text": f"echo: {body['message_text']}", "tokens_used": 5})


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    peer = Agents()
    app = Starlette(routes=[Route("/agents/invoke", peer.invoke, methods=["POST"])])
    async with serve_app(app, port=peer.port, lifespan="off"):
        yield peer


@pytest.fixture
def settings_overrides(agents: Agents) -> dict[str, Any]:
    return {"agents_service_url": f"http://127.0.0.1:{agents.port}"}


def secret_text() -> str:
    return f"alice-private-{secrets.token_hex(8)}"


def leaks(secret: str, *responses: httpx.Response) -> list[str]:
    """The answers (method, path, status) whose bytes contain ``secret``."""
    return [
        f"{r.request.method} {r.request.url.path} {r.status_code}"
        for r in responses
        if secret.encode() in r.content
    ]


# --- Second Me ------------------------------------------------------------------------------


async def test_second_me_history_and_profile_are_the_callers_own(api: Api, agents: Agents) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    secret = secret_text()
    r = await alice.post("/secondme/invoke", {"prompt": f"remember {secret}"})
    assert r.status_code == 200, r.text
    assert secret in r.json()["response"]
    alice_history = (await alice.get("/secondme/history")).json()
    assert len(alice_history) == 2
    assert all(secret in t["content"] for t in alice_history)

    h = api.http
    seen = [
        await bob.get("/secondme/history"),
        await bob.get("/secondme/history", user_id=alice.user_id, limit=200),
        await bob.get("/secondme/profile"),
        await bob.get("/secondme/profile", user_id=alice.user_id),
        # Alice's id in the body of each write: refused, or ignored.
        await bob.post("/secondme/invoke", {"prompt": "hi", "user_id": alice.user_id}),
        await h.post(
            "/secondme/history/clear", json={"user_id": alice.user_id}, headers=bob.headers
        ),
    ]
    history, history_for_alice, profile, profile_for_alice, foreign_invoke, cleared = seen
    assert history.status_code == history_for_alice.status_code == 200
    assert history.json() == history_for_alice.json() == []
    for answer in (profile, profile_for_alice):
        assert answer.status_code == 200
        assert answer.json()["user_id"] == bob.user_id
        assert answer.json()["total_interactions"] == 0
        assert answer.json()["last_interaction"] is None
    assert foreign_invoke.status_code == 422  # no field of the request names a user
    assert cleared.status_code == 200
    assert cleared.json() == {"status": "cleared", "deleted": 0}

    # Bob's own invocations: his context and history hold nothing of Alice's.
    mine = await bob.post("/secondme/invoke", {"prompt": "what do you remember?"})
    assert mine.status_code == 200, mine.text
    assert [t["content"] for t in mine.json()["history"]] == [
        "what do you remember?",
        "echo: what do you remember?",
    ]
    assert agents.requests[-1]["user_id"] == bob.user_id
    assert agents.requests[-1]["context"]["history"] == []
    async with h.stream(
        "POST", "/secondme/invoke/stream", json={"prompt": "and now?"}, headers=bob.headers
    ) as stream:
        assert stream.status_code == 200
        await stream.aread()
    seen.append(mine)
    seen.append(stream)
    seen.append(await bob.get("/secondme/history", limit=200))
    seen.append(await bob.get("/secondme/profile"))
    assert seen[-1].json()["total_interactions"] == 2
    assert leaks(secret, *seen) == []
    assert all(secret not in str(req) for req in agents.requests[1:])

    # Alice's history and counters are untouched by all of it.
    assert (await alice.get("/secondme/history")).json() == alice_history
    alice_profile = (await alice.get("/secondme/profile")).json()
    assert alice_profile["user_id"] == alice.user_id
    assert alice_profile["total_interactions"] == 1


# --- presence -------------------------------------------------------------------------------


async def status_of(api: Api, user: User) -> str:
    r = await api.http.get(f"/city/presence/{user.user_id}")
    assert r.status_code == 200
    status: str = r.json()["status"]
    return status


async def test_presence_writes_only_move_the_token_user(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    h = api.http
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as alice_ws:
        bulk = await alice_ws.expect("presence.bulk_update")
        alice_conn = bulk["connection_id"]
        assert await status_of(api, alice) == "online"

        # A heartbeat naming Alice is refused; Bob's own heartbeat answers Bob's record.
        r = await bob.post("/city/presence/heartbeat", {"status": "away", "user_id": alice.user_id})
        assert r.status_code == 422
        r = await bob.post("/city/presence/heartbeat", {"status": "away"})
        assert r.status_code == 200
        assert r.json()["user_id"] == bob.user_id
        assert r.json()["status"] == "away"
        assert await status_of(api, alice) == "online"

        # Offline with Alice's id or her socket's connection id in the body: only Bob goes.
        for body in ({"user_id": alice.user_id}, {"connection_id": alice_conn}):
            r = await h.post("/city/presence/offline", json=body, headers=bob.headers)
            assert r.status_code == 204
            assert await status_of(api, alice) == "online"
        assert await status_of(api, bob) == "offline"

        # sendBeacon (text/plain, token in the body) with Bob's token and Alice's connection id.
        beacon = f'{{"token": "{bob.token}", "connection_id": "{alice_conn}"}}'
        r = await h.post(
            "/city/presence/offline", content=beacon, headers={"content-type": "text/plain"}
        )
        assert r.status_code == 204
        # Bob's header with Alice's token in the body: the header's user is the one who leaves.
        await bob.post("/city/presence/heartbeat", {})
        r = await h.post("/city/presence/offline", json={"token": alice.token}, headers=bob.headers)
        assert r.status_code == 204
        assert await status_of(api, bob) == "offline"
        assert await status_of(api, alice) == "online"

        # A presence frame naming Alice over Bob's socket moves Bob, if anyone.
        async with open_socket(api.server, "/ws/city/presence", token=bob.token) as bob_ws:
            await bob_ws.expect("presence.bulk_update")
            await bob_ws.send(
                {"event": "presence.heartbeat", "status": "away", "user_id": alice.user_id}
            )
            await bob_ws.send({"event": "ping"})
            await bob_ws.expect("pong")
            assert await status_of(api, alice) == "online"
            assert await status_of(api, bob) in ("online", "away")

        # Alice's socket lived through all of it and never heard of her going away or offline
        # (her own "online" from when it opened may come after the bulk update).
        await alice_ws.send({"event": "ping"})
        while (frame := await alice_ws.recv())["event"] != "pong":
            if frame["event"] == "presence.update" and frame["user_id"] == alice.user_id:
                assert frame["status"] == "online", frame
        assert await status_of(api, alice) == "online"


# --- rooms ----------------------------------------------------------------------------------


async def room(api: Api, slug: str) -> dict[str, Any]:
    r = await api.http.get(f"/city/rooms/{slug}")
    assert r.status_code == 200
    detail: dict[str, Any] = r.json()
    return detail


async def membership_events(api: Api) -> list[tuple[str, str | None]]:
    feed = (await api.http.get("/city/feed", params={"limit": 100})).json()
    return [(e["kind"], e["user_id"]) for e in feed if e["kind"].startswith("member_")]


async def test_join_and_leave_move_only_the_caller(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    h = api.http
    r = await alice.post("/city/rooms/science/join")
    assert r.json() == {"status": "joined", "room_id": "room_city_science"}
    assert (await room(api, "science"))["member_count"] == 1

    # Bob leaves "for Alice" (her id in the body and the query): he was no member, nothing moves.
    r = await h.post(
        "/city/rooms/science/leave",
        params={"user_id": alice.user_id},
        json={"user_id": alice.user_id},
        headers=bob.headers,
    )
    assert r.status_code == 200
    assert r.json() == {"status": "left", "room_id": "room_city_science"}
    assert (await room(api, "science"))["member_count"] == 1
    assert await membership_events(api) == [("member_joined", alice.user_id)]

    # Bob joins "as Alice": he is the one who joins.
    r = await h.post(
        "/city/rooms/science/join", json={"user_id": alice.user_id}, headers=bob.headers
    )
    assert r.status_code == 200
    assert (await room(api, "science"))["member_count"] == 2
    r = await bob.post("/city/rooms/science/leave")
    assert (await room(api, "science"))["member_count"] == 1
    assert await membership_events(api) == [
        ("member_left", bob.user_id),
        ("member_joined", bob.user_id),
        ("member_joined", alice.user_id),
    ]


async def test_message_author_comes_from_the_token(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    secret = secret_text()
    original = await alice.say("science", secret, client_msg_id="k-1")

    # An author in the body is refused, not believed.
    for field in ("author_user_id", "user_id", "username", "author_agent_id"):
        r = await bob.post("/city/rooms/science/messages", {"body": "forged", field: alice.user_id})
        assert r.status_code == 422, (field, r.text)

    # Alice's idempotency key in Bob's hands makes a message of Bob's, not a replay of hers.
    r = await bob.post("/city/rooms/science/messages", {"body": "mine", "client_msg_id": "k-1"})
    assert r.status_code == 201
    assert "Idempotent-Replayed" not in r.headers
    mine = r.json()
    assert mine["id"] != original["id"]
    assert (mine["author_user_id"], mine["username"], mine["body"]) == (bob.user_id, "Bob", "mine")
    assert leaks(secret, r) == []

    # Over the room socket: a frame naming Alice is refused or posts as Bob.
    async with bob.socket("science") as ws:
        await ws.expect("room.state")
        await ws.send(
            {
                "event": "room.message.send",
                "body": "from the socket",
                "client_msg_id": "k-1",
                "author_user_id": alice.user_id,
                "user_id": alice.user_id,
                "username": "Alice",
            }
        )
        frame = await ws.recv()
        while frame["event"] not in ("error", "room.message.ack"):
            frame = await ws.recv()
        if frame["event"] == "room.message.ack":
            assert frame["message"]["author_user_id"] == bob.user_id
            assert frame["message"]["username"] == "Bob"
        assert secret not in str(frame)

    page = (await api.http.get("/city/rooms/science/messages")).json()["messages"]
    by_alice = [m for m in page if m["author_user_id"] == alice.user_id]
    assert by_alice == [original]
    assert all(m["author_user_id"] == bob.user_id for m in page if m["body"] != secret)


# --- tokens ---------------------------------------------------------------------------------


def bad_tokens(api: Api, victim: User) -> dict[str, str]:
    """Tokens for the victim that must never be accepted."""
    now = int(time.time())
    claims = {"sub": victim.user_id, "name": victim.name, "iat": now, "exp": now + 3600}
    other_secret = "another-deployment-secret-0123456789abcdef"
    return {
        "expired": api.server.resources.auth.mint(victim.user_id, victim.name, -60).token,
        "other_secret": jwt.encode(claims, other_secret, algorithm="HS256"),
        "unsigned": jwt.encode(claims, None, algorithm="none"),
        "tampered": victim.token[:-4] + ("AAAA" if not victim.token.endswith("AAAA") else "BBBB"),
    }


async def test_expired_foreign_and_unsigned_tokens_get_401_and_4401(
    api: Api, agents: Agents
) -> None:
    alice = await api.guest("Alice")
    secret = secret_text()
    assert (await alice.post("/secondme/invoke", {"prompt": secret})).status_code == 200
    await alice.say("science", "hello")
    h = api.http
    for kind, token in bad_tokens(api, alice).items():
        auth = {"Authorization": f"Bearer {token}"}
        answers = [
            await h.get("/secondme/history", headers=auth),
            await h.get("/secondme/profile", headers=auth),
            await h.post("/secondme/history/clear", headers=auth),
            await h.post("/secondme/invoke", json={"prompt": "x"}, headers=auth),
            await h.post("/city/presence/heartbeat", json={}, headers=auth),
            await h.post("/city/presence/offline", headers=auth),
            await h.post(
                "/city/presence/offline",
                content=f'{{"token": "{token}"}}',
                headers={"content-type": "text/plain"},
            ),
            await h.post("/city/rooms/science/join", headers=auth),
            await h.post("/city/rooms/science/leave", headers=auth),
            await h.post("/city/rooms/science/messages", json={"body": "x"}, headers=auth),
            await h.post("/city/rooms", json={"slug": "forged", "name": "F"}, headers=auth),
        ]
        for r in answers:
            assert r.status_code == 401, (kind, r.request.url.path, r.text)
            assert r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert leaks(secret, *answers) == []
        for path in ("/ws/city/rooms/science", "/ws/city/presence"):
            async with open_socket(api.server, path, token=token) as ws:
                assert await ws.closed_with() == 4401, (kind, path)
            # The same token in a first "auth" frame instead of the URL.
            async with open_socket(api.server, path) as ws:
                await ws.send({"event": "auth", "token": token})
                assert await ws.closed_with() == 4401, (kind, path, "frame")

    # Nothing moved: Alice's data is as she left it, and she is still herself.
    assert len((await alice.get("/secondme/history")).json()) == 2
    assert (await room(api, "science"))["member_count"] == 0
    assert await status_of(api, alice) == "offline"
    assert (await h.get("/city/rooms/forged")).status_code == 404


# --- one reading of the bearer token, for the route's dependency and the post lane -------------
BEARER_HEADERS: list[list[tuple[bytes, bytes]]] = [
    [],
    [(b"authorization", b"")],
    [(b"authorization", b"Bearer")],
    [(b"authorization", b"Bearer ")],
    [(b"authorization", b"Bearer    ")],
    [(b"authorization", b"Bearer tok")],
    [(b"authorization", b"bearer tok")],
    [(b"authorization", b"BEARER tok")],
    [(b"authorization", b"BeArEr   tok  ")],
    [(b"authorization", b"Bearer tok with spaces")],
    [(b"authorization", b"Bearer\ttok")],
    [(b"authorization", b"Bearer \ttok\t")],
    [(b"authorization", b" Bearer tok")],
    [(b"authorization", b"Bearertok")],
    [(b"authorization", b"Basic eDp5")],
    [(b"authorization", b"Token tok")],
    [(b"authorization", b"Bearer \xa0tok\xa0")],  # latin-1 no-break spaces
    [(b"authorization", b"Bearer t\xe9k")],
    [(b"authorization", b"Bearer tok"), (b"authorization", b"Bearer other")],
    [(b"authorization", b"Basic eDp5"), (b"authorization", b"Bearer tok")],
    [(b"authorization", b"Bearer"), (b"authorization", b"Bearer tok")],
    [(b"x-authorization", b"Bearer tok")],
    [(b"content-type", b"application/json"), (b"authorization", b"Bearer tok")],
]


@pytest.mark.parametrize("headers", BEARER_HEADERS)
async def test_bearer_credentials_read_what_http_bearer_reads(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """``bearer_credentials`` (the ``CurrentUser`` dependency's and the post lane's) takes and
    refuses every header shape as FastAPI's ``HTTPBearer(auto_error=False)`` does."""
    from fastapi.security import HTTPBearer

    from daarion_city.identity.http import _bearer, bearer_credentials

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    theirs = await HTTPBearer(auto_error=False)(Request(scope))
    expected = theirs.credentials if theirs is not None else None
    assert bearer_credentials(headers) == expected
    assert await _bearer(Request(scope)) == expected
