"""A room's fast list (``realtime/fast.py``) through real sockets, on SQLite and PostgreSQL:
once every socket of a room is in the direct state, messages go out through the list of their
transports; sockets joining, leaving and being closed by the server drop it, and every socket
still gets every message once, in order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect

from daarion_city.realtime.closes import close_now
from tests.realtime.test_slow_readers import ROOM, ROOM_ID, Collector, server_side
from tests.support import Api, User, eventually


@contextlib.asynccontextmanager
async def reader(api: Api, user: User) -> AsyncIterator[Collector]:
    url = api.server.ws_url(f"/ws/city/rooms/{ROOM}?token={user.token}")
    ws: ClientConnection
    async with connect(url, max_size=None, compression=None) as ws:
        collector = Collector(ws)
        await eventually(
            lambda: any(
                c.user.user_id == user.user_id and not c.catching_up
                for c in api.server.resources.hub.connections(ROOM_ID)
            ),
            10,
            f"{user.user_id}'s socket live",
        )
        try:
            yield collector
        finally:
            collector.task.cancel()


async def post(alice: User, count: int) -> list[int]:
    return [int((await alice.say(ROOM, f"m{n}"))["seq"]) for n in range(count)]


async def test_the_fast_list_delivers_everything_once_as_sockets_come_and_go(api: Api) -> None:
    hub = api.server.resources.hub
    alice, bob, carol, dave = [await api.guest(n) for n in ("Alice", "Bob", "Carol", "Dave")]
    async with reader(api, alice) as a, reader(api, bob) as b:
        async with reader(api, carol) as c:
            first = await post(alice, 4)
            for got in (a, b, c):
                assert await got.wait_for(4) == first
            # Every socket took the direct path twice in a row: the list holds all three.
            assert hub.fast_sockets(ROOM_ID) == 3

            async with reader(api, dave) as d:
                assert hub.fast_sockets(ROOM_ID) == 0  # a socket joined
                second = await post(alice, 4)
                assert hub.fast_sockets(ROOM_ID) == 4  # rebuilt with the newcomer
                for got in (a, b, c):
                    assert await got.wait_for(8) == first + second
                assert await d.wait_for(4) == second
        await eventually(lambda: len(hub.connections(ROOM_ID)) == 2, 10, "two sockets left")
        assert hub.fast_sockets(ROOM_ID) == 0  # sockets left

        third = await post(alice, 4)
        assert hub.fast_sockets(ROOM_ID) == 2
        # The server closes Bob's socket (as it does a reader too slow to keep up): its
        # protocol's close frame drops the list at once, before anything else is written.
        assert close_now(server_side(api.server, bob).websocket, 4408, "test", 1.0)
        assert hub.fast_sockets(ROOM_ID) == 0
        fourth = await post(alice, 2)
        assert await a.wait_for(14) == first + second + third + fourth
        assert b.seqs == first + second + third  # nothing after its close frame
        assert c.seqs == first + second
