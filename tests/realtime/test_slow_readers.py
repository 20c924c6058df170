"""Socket flow control through a real uvicorn socket, on SQLite and PostgreSQL: a reader that stops
reading is closed with 4408 (its transport aborted when the close frame cannot be written in
time) while the sockets beside it get everything, and the opening snapshot of a resume within
``CITY_RESUME_LIMIT`` never counts against the send queue."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from daarion_city.realtime.connection import Connection
from daarion_city.realtime.transport import SCOPE_KEY
from tests.support import Api, Server, User, eventually

ROOM, ROOM_ID = "science", "room_city_science"
BODY = "ж" * 10_000  # 20 kB, the largest body: the buffers before a stopped reader fill fast
MAX_POSTS = 1000
SLOW = {"city_ws_send_queue": 20, "city_ws_close_timeout": 10.0}
NEVER_READS = {"city_ws_send_queue": 20, "city_ws_close_timeout": 0.5}


@contextlib.asynccontextmanager
async def stopped_reader(server: Server, user: User) -> AsyncIterator[ClientConnection]:
    """A room socket whose client reads nothing unless ``recv()`` is called: a small receive
    buffer, and the client stops reading TCP after one buffered frame."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    url = server.ws_url(f"/ws/city/rooms/{ROOM}?token={user.token}")
    async with connect(
        url,
        sock=sock,
        max_queue=1,
        max_size=None,
        compression=None,
        ping_interval=None,
        close_timeout=1,
        open_timeout=5,
    ) as ws:
        yield ws


def server_side(server: Server, user: User) -> Connection:
    [conn] = [
        c for c in server.resources.hub.connections(ROOM_ID) if c.user.user_id == user.user_id
    ]
    return conn


async def members_online(api: Api) -> int:
    count: int = (await api.http.get(f"/city/rooms/{ROOM}")).json()["members_online"]
    return count


async def newest_seq(api: Api) -> int:
    messages = (await api.http.get(f"/city/rooms/{ROOM}/messages")).json()["messages"]
    return int(messages[-1]["seq"]) if messages else 0


async def flood_until_overflow(alice: User, conn: Connection) -> int:
    """Post large messages until the server gives up on ``conn``; the number posted."""
    posted = 0
    while not conn.closing:
        assert posted < MAX_POSTS, "the stopped reader's send queue never overflowed"
        await alice.say(ROOM, BODY)
        posted += 1
    return posted


class Collector:
    """A healthy socket reading everything, in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                if frame.get("event") == "room.message":
                    self.seqs.append(frame["message"]["seq"])

    async def wait_for(self, count: int) -> list[int]:
        await eventually(lambda: len(self.seqs) >= count or self.task.done(), 30, "collector")
        return self.seqs


@pytest.mark.parametrize("settings_overrides", [SLOW])
async def test_a_stopped_reader_is_closed_with_4408_and_its_neighbour_gets_everything(
    api: Api,
) -> None:
    alice = await api.guest("Alice")  # posts and reads
    sloth = await api.guest("Sloth")  # stops reading
    async with (
        connect(
            api.server.ws_url(f"/ws/city/rooms/{ROOM}?token={alice.token}"),
            max_size=None,
            compression=None,
        ) as healthy_ws,
        stopped_reader(api.server, sloth) as slow,
    ):
        healthy = Collector(healthy_ws)
        await eventually(lambda: len(api.server.resources.hub.connections(ROOM_ID)) == 2, 5, "open")
        start = await newest_seq(api)
        conn = server_side(api.server, sloth)
        posted = await flood_until_overflow(alice, conn)

        # Sent after the overflow: never stored (nothing stored that could not be acknowledged).
        await slow.send(orjson.dumps({"event": "room.message.send", "body": "late"}).decode())
        await slow.send(orjson.dumps({"event": "ping"}).decode())
        # At once, while the client still reads nothing: the socket has left the room.
        hub = api.server.resources.hub
        await eventually(lambda: conn not in hub.connections(ROOM_ID), 3, "still in the hub")
        assert await members_online(api) == 1
        # The client reads again: what was buffered, then the close frame.
        events: list[str] = []
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    events.append(orjson.loads(await slow.recv())["event"])
        assert slow.close_code == 4408, (slow.close_code, len(events))
        assert "room.message.ack" not in events
        assert "pong" not in events

        seqs = await healthy.wait_for(posted)
        assert seqs == list(range(start + 1, start + posted + 1))
        await eventually(
            lambda: conn not in api.server.resources.hub.connections(ROOM_ID), 5, "hub"
        )
        assert await members_online(api) == 1
        recent = (await api.http.get(f"/city/rooms/{ROOM}/messages")).json()["messages"]
        assert recent[-1]["seq"] == start + posted
        assert all(m["body"] != "late" for m in recent)
        # The healthy socket is still live.
        await healthy_ws.send(orjson.dumps({"event": "ping"}).decode())
        await alice.say(ROOM, "still here")
        assert (await healthy.wait_for(posted + 1))[-1] == start + posted + 1
        healthy.task.cancel()


@pytest.mark.parametrize("settings_overrides", [NEVER_READS])
async def test_a_reader_that_never_reads_again_is_aborted_and_leaves_the_room(api: Api) -> None:
    alice = await api.guest("Alice")
    sloth = await api.guest("Sloth")
    async with alice.socket(ROOM) as a, stopped_reader(api.server, sloth):
        await a.expect("room.state")
        await a.expect("room.join", user_id=sloth.user_id)
        conn = server_side(api.server, sloth)
        proto = conn.websocket.scope[SCOPE_KEY]
        await flood_until_overflow(alice, conn)
        # Within the close timeout (0.5 s) and some slack: the transport is gone, and so is
        # the socket from the hub and from the room's members.
        await eventually(lambda: proto.disconnected, 10, "the transport was never aborted")
        await eventually(
            lambda: conn not in api.server.resources.hub.connections(ROOM_ID), 5, "hub"
        )
        assert await members_online(api) == 1
        await a.expect("room.leave", timeout=10, user_id=sloth.user_id)


async def test_a_resume_exactly_at_the_limit_replays_everything_and_stays_open(
    api: Api, settings: Any
) -> None:
    limit = settings.city_resume_limit
    assert limit == settings.city_ws_send_queue == 1000  # the defaults
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")

    async def post(user: User, i: int) -> None:
        await user.say(ROOM, f"m{i}")

    for chunk in range(0, limit + 5, 50):
        await asyncio.gather(
            *(post(alice if i % 2 else bob, i) for i in range(chunk, min(chunk + 50, limit + 5)))
        )
    newest = await newest_seq(api)
    async with bob.socket(ROOM, since_seq=newest - limit) as ws:
        state = await ws.recv(10)
        assert state["event"] == "room.state"
        assert state["last_seq"] == newest
        replay = [await ws.recv(10) for _ in range(limit)]
        assert [f["event"] for f in replay] == ["room.message"] * limit
        assert [f["message"]["seq"] for f in replay] == list(range(newest - limit + 1, newest + 1))
        await ws.send({"event": "ping"})
        assert await ws.recv() == {"event": "pong"}
        live = await alice.say(ROOM, "live")
        assert (await ws.expect("room.message"))["message"]["seq"] == live["seq"] == newest + 1
