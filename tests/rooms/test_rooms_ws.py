"""The room WebSocket through a real uvicorn socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tests.support import Api, open_socket


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"city_typing_timeout": 0.5, "city_typing_interval": 0.1, "city_resume_limit": 20}


async def test_state_on_connect(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("general") as ws:
        state = await ws.recv()
        assert state["event"] == "room.state"
        assert state["room_id"] == "room_city_general"
        assert state["last_seq"] == 1
        assert state["online_members"] == [
            {"user_id": alice.user_id, "name": "Alice", "status": "online"}
        ]
        detail = (await api.http.get("/city/rooms/general")).json()
        assert detail["members_online"] == 1
        assert detail["online_members"][0]["user_id"] == alice.user_id


async def test_http_post_reaches_room_subscribers_only(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    carol = await api.guest("Carol")
    async with (
        alice.socket("science") as a,
        bob.socket("science") as b,
        carol.socket("energy") as c,
    ):
        for ws in (a, b, c):
            await ws.expect("room.state")
        sent = await alice.say("science", "hello science")
        for ws in (a, b):
            frame = await ws.expect("room.message")
            assert frame["room_id"] == "room_city_science"
            assert frame["message"] == sent
        await c.silent(0.3, ignore=("room.join", "room.leave"))


async def test_room_messages_take_the_direct_path_to_idle_sockets(api: Api) -> None:
    from daarion_city.realtime.transport import DirectWriter

    alice = await api.guest("Alice")
    async with alice.socket("science") as a, alice.socket("science") as b:
        await a.expect("room.state")
        await b.expect("room.state")
        before = DirectWriter.writes
        sent = await alice.say("science", "fast")
        for ws in (a, b):
            assert (await ws.expect("room.message"))["message"] == sent
        assert DirectWriter.writes - before == 2  # framed once, written to both transports


async def test_an_open_socket_keeps_no_copy_of_its_handshake(api: Api) -> None:
    """uvicorn keeps the upgrade request and the 101 response for as long as a socket lives;
    the endpoint drops them, and the scope's copy of the headers, once the socket is accepted
    (about 4 KB per idle socket, more with a browser's cookies), and the socket works on:
    messages both ways and pings."""
    alice = await api.guest("Alice")
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        (proto,) = [
            c
            for c in api.server.uvicorn.server_state.connections
            if isinstance(c, WebSocketsSansIOProtocol)
        ]
        assert proto.request is None
        assert proto.response is None
        assert proto.scope["headers"] == []
        await ws.send({"event": "room.message.send", "body": "still here", "client_msg_id": "h1"})
        events = {(await ws.recv())["event"] for _ in range(2)}
        assert events == {"room.message", "room.message.ack"}
        await ws.send({"event": "ping"})
        await ws.expect("pong")


async def test_websocket_send_is_acked_broadcast_and_stored(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("science") as a, bob.socket("science") as b:
        await a.expect("room.state")
        await b.expect("room.state")
        await a.expect("room.join")
        await a.send(
            {"event": "room.message.send", "body": "over the socket", "client_msg_id": "k1"}
        )
        # The sender gets the broadcast like everyone, and the ack.
        frames = {f["event"]: f for f in [await a.recv(), await a.recv()]}
        ack = frames["room.message.ack"]
        assert ack["client_msg_id"] == "k1"
        assert ack["message"]["seq"] == 1
        assert ack["message"]["author_user_id"] == alice.user_id
        assert frames["room.message"]["message"] == ack["message"]
        got = await b.expect("room.message")
        assert got["message"] == ack["message"]
        # A retry of the same client_msg_id is acked with the same message and not re-broadcast.
        await a.send(
            {"event": "room.message.send", "body": "over the socket", "client_msg_id": "k1"}
        )
        again = await a.expect("room.message.ack")
        assert again["message"] == ack["message"]
        await b.silent(0.3)
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [(m["body"], m["seq"]) for m in page["messages"]] == [("over the socket", 1)]


async def test_join_and_leave_follow_connections(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("builders") as a:
        await a.expect("room.state")
        async with bob.socket("builders") as b1:
            state = await b1.expect("room.state")
            assert {m["user_id"] for m in state["online_members"]} == {alice.user_id, bob.user_id}
            joined = await a.expect("room.join")
            assert joined == {
                "event": "room.join",
                "room_id": "room_city_builders",
                "user_id": bob.user_id,
                "name": "Bob",
            }
            async with bob.socket("builders") as b2:  # a second tab: no second join
                await b2.expect("room.state")
                await a.silent(0.3)
            await a.silent(0.3)  # one tab closed, the other still open: no leave
            assert (await api.http.get("/city/rooms/builders")).json()["members_online"] == 2
        left = await a.expect("room.leave")
        assert left["user_id"] == bob.user_id
        assert (await api.http.get("/city/rooms/builders")).json()["members_online"] == 1


async def test_abrupt_disconnect_counts_as_leave(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("builders") as a:
        await a.expect("room.state")
        async with bob.socket("builders") as b:
            await b.expect("room.state")
            await a.expect("room.join")
            b.ws.transport.abort()  # no close frame: the TCP connection just drops
            left = await a.expect("room.leave")
            assert left["user_id"] == bob.user_id


async def test_resume_with_since_seq_replays_exactly_the_missed_messages(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    for i in range(5):
        await alice.say("science", f"before {i}")
    async with bob.socket("science", since_seq=2) as b:
        state = await b.expect("room.state")
        assert state["last_seq"] == 5
        replayed = [await b.expect("room.message") for _ in range(3)]
        assert [f["message"]["seq"] for f in replayed] == [3, 4, 5]
        live = await alice.say("science", "live")
        frame = await b.expect("room.message")
        assert frame["message"]["seq"] == live["seq"] == 6
        await b.silent(0.3)


async def test_resume_while_messages_keep_coming_has_no_gap_or_repeat(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    for i in range(3):
        await alice.say("science", f"m{i}")

    async def writer() -> None:
        for i in range(15):
            await alice.say("science", f"w{i}")

    task = asyncio.create_task(writer())
    async with bob.socket("science", since_seq=0) as b:
        await b.expect("room.state")
        await task
        seqs = []
        while len(seqs) < 18:
            seqs.append((await b.expect("room.message"))["message"]["seq"])
        assert seqs == list(range(1, 19))
        await b.silent(0.3)


async def test_resume_beyond_the_limit_asks_for_a_resync(api: Api) -> None:
    alice = await api.guest("Alice")
    for i in range(25):
        await alice.say("science", f"m{i}")
    async with alice.socket("science", since_seq=1) as ws:
        assert (await ws.recv())["event"] == "room.state"
        err = await ws.recv()
        assert err["event"] == "error"
        assert err["code"] == "resync_required"
        # Live again from the newest message.
        await alice.say("science", "after")
        assert (await ws.expect("room.message"))["message"]["seq"] == 26
    async with alice.socket("science", since_seq=99) as ws:  # ahead of the room
        await ws.expect("room.state")
        assert (await ws.expect("error"))["code"] == "resync_required"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('"text"', "invalid_frame"),
        ("{}", "invalid_frame"),
        ('{"event": 5}', "invalid_frame"),
        ('{"event": "room.explode"}', "unknown_event"),
        ('{"event": "room.message.send"}', "invalid_frame"),
        ('{"event": "room.message.send", "body": 5}', "invalid_frame"),
        ('{"event": "room.message.send", "body": "   "}', "invalid_frame"),
        ('{"event": "room.message.send", "body": ""}', "invalid_frame"),
        ('{"event": "room.message.send", "body": "a\\u0000b"}', "invalid_frame"),
        ('{"event": "room.message.send", "body": "\\u200b\\u200d\\ufeff"}', "invalid_frame"),
        ('{"event": "room.typing", "typing": "yes"}', "invalid_frame"),
        ('{"event": "room.message.send", "body": "x", "client_msg_id": 7}', "invalid_frame"),
        ('{"event": "ping", "x": ' + "[" * 40 + "]" * 40 + "}", "invalid_frame"),
        (b"\x00\x01binary", "invalid_frame"),
    ],
)
async def test_bad_frames_get_typed_errors_and_the_socket_stays_usable(
    api: Api, frame: str | bytes, code: str
) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        await ws.send(frame)
        err = await ws.recv()
        assert err["event"] == "error"
        assert err["code"] == code
        assert isinstance(err["message"], str)
        await ws.send({"event": "ping"})
        assert await ws.recv() == {"event": "pong"}
        await ws.send({"event": "room.join"})  # legacy frames are accepted and ignored
        await ws.send({"event": "room.leave"})
        await ws.send({"event": "room.message.send", "body": "still here"})
        assert (await ws.expect("room.message.ack"))["message"]["body"] == "still here"
    assert (await api.http.get("/city/rooms/science/messages")).json()["messages"][-1][
        "body"
    ] == "still here"


# A socket without a token waits CITY_WS_AUTH_TIMEOUT (10 s) for an auth frame before its 4401.
@pytest.mark.parametrize("settings_overrides", [{"city_ws_auth_timeout": 1.0}])
async def test_close_codes(api: Api) -> None:
    alice = await api.guest("Alice")
    async with open_socket(api.server, "/ws/city/rooms/general") as ws:
        assert await ws.closed_with() == 4401
    async with open_socket(api.server, "/ws/city/rooms/general", token="forged") as ws:
        assert await ws.closed_with() == 4401
    async with alice.socket("nowhere") as ws:
        assert await ws.closed_with() == 4404
    async with alice.socket("general", since_seq="abc") as ws:
        assert await ws.closed_with() == 4400
    async with alice.socket("general") as ws:
        await ws.expect("room.state")
        await ws.send('{"event": "ping", "pad": "' + "x" * 70_000 + '"}')
        assert await ws.closed_with() == 1009


async def test_typing_is_relayed_to_others_and_expires(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("science") as a, bob.socket("science") as b:
        await a.expect("room.state")
        await b.expect("room.state")
        await a.expect("room.join")
        await a.send({"event": "room.typing", "typing": True})
        t = await b.expect("room.typing")
        assert t == {
            "event": "room.typing",
            "room_id": "room_city_science",
            "user_id": alice.user_id,
            "name": "Alice",
            "typing": True,
        }
        await a.send({"event": "room.typing", "typing": True})  # no change: not repeated
        expired = await b.expect("room.typing", timeout=3)  # city_typing_timeout is 0.5 s here
        assert expired["typing"] is False
        await a.silent(0.2)  # the typist does not hear about itself
        # Sending a message ends typing at once.
        await a.send({"event": "room.typing", "typing": True})
        assert (await b.expect("room.typing"))["typing"] is True
        await a.send({"event": "room.message.send", "body": "done typing"})
        assert (await b.expect("room.typing"))["typing"] is False
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["body"] for m in page["messages"]] == ["done typing"]  # typing is never stored


async def test_http_membership_is_announced_on_room_sockets(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with alice.socket("builders") as a:
        await a.expect("room.state")
        await bob.post("/city/rooms/builders/join")
        member = await a.expect("room.member")
        assert member == {
            "event": "room.member",
            "room_id": "room_city_builders",
            "user_id": bob.user_id,
            "name": "Bob",
            "membership": "join",
        }
        await bob.post("/city/rooms/builders/leave")
        assert (await a.expect("room.member"))["membership"] == "leave"


async def test_many_sockets_in_one_room_each_get_every_message_once_in_order(api: Api) -> None:
    users = [await api.guest(f"U{i}") for i in range(10)]
    poster = await api.guest("Poster")
    async with contextlib_stack() as stack:
        sockets = [await stack.enter_async_context(u.socket("energy")) for u in users]
        for ws in sockets:
            await ws.expect("room.state")
        await asyncio.gather(*(poster.say("energy", f"n{i}") for i in range(30)))
        for ws in sockets:
            seqs = []
            while len(seqs) < 30:
                seqs.append((await ws.expect("room.message"))["message"]["seq"])
            assert seqs == list(range(1, 31))


async def test_messages_coalesced_into_one_write_arrive_as_separate_frames(api: Api) -> None:
    """Messages that become deliverable together are written to each socket as one buffer of
    back-to-back frames (realtime/channel.py); a client still reads each as its own frame."""
    from daarion_city.realtime.transport import DirectWriter
    from daarion_city.rooms.frames import message_frame

    alice = await api.guest("Alice")
    first = await alice.say("science", "one")
    assert api.server.resources is not None
    hub = api.server.resources.hub
    async with alice.socket("science") as a, alice.socket("science") as b:
        for ws in (a, b):
            await ws.expect("room.state")
        channel = hub._channels["room_city_science"]
        run = [
            (seq, message_frame("room_city_science", {**first, "seq": seq, "body": f"b{seq}"}))
            for seq in range(first["seq"] + 1, first["seq"] + 4)
        ]
        before = DirectWriter.writes
        channel.on_messages(run)
        assert DirectWriter.writes - before == 2  # one write per socket for three messages
        for ws in (a, b):
            got = [(await ws.expect("room.message"))["message"] for _ in run]
            assert [(m["seq"], m["body"]) for m in got] == [(seq, f"b{seq}") for seq, _ in run]


def contextlib_stack() -> Any:
    import contextlib

    return contextlib.AsyncExitStack()
