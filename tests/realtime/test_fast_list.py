"""A room's fast list (``realtime/fast.py``) through real sockets, on SQLite and PostgreSQL:
once every socket of a room is in the direct state, messages go out through the list of their
transports; sockets joining are served beside it, sockets leaving or falling behind are taken
out of it, a close frame drops it, and every socket still gets every message once, in order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from daarion_city.realtime.closes import close_now
from tests.realtime.test_slow_readers import (
    BODY,
    ROOM,
    ROOM_ID,
    SLOW,
    Collector,
    server_side,
    stopped_reader,
)
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
                # The newcomer is served socket by socket; the list holds the other three.
                assert hub.fast_sockets(ROOM_ID) == 3
                second = await post(alice, 4)
                assert hub.fast_sockets(ROOM_ID) == 3
                for got in (a, b, c):
                    assert await got.wait_for(8) == first + second
                assert await d.wait_for(4) == second
            await eventually(lambda: len(hub.connections(ROOM_ID)) == 3, 10, "Dave left")
            assert hub.fast_sockets(ROOM_ID) == 3
        await eventually(lambda: len(hub.connections(ROOM_ID)) == 2, 10, "Carol left")
        assert hub.fast_sockets(ROOM_ID) == 2  # taken out of the list as she left

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
        assert d.seqs == second


@pytest.mark.parametrize("settings_overrides", [SLOW])
async def test_a_reader_falling_behind_leaves_the_list_and_the_others_keep_it(api: Api) -> None:
    hub = api.server.resources.hub
    alice, carol, sloth = [await api.guest(n) for n in ("Alice", "Carol", "Sloth")]
    async with reader(api, alice) as a, reader(api, carol) as c, stopped_reader(api.server, sloth):
        await eventually(
            lambda: sum(not x.catching_up for x in hub.connections(ROOM_ID)) == 3, 10, "3 live"
        )
        posted = await post(alice, 3)
        assert hub.fast_sockets(ROOM_ID) == 3
        slow = server_side(api.server, sloth)
        sizes = set()
        while not slow.closing:  # large messages, until the stopped reader is given up on
            assert len(posted) < 300, "the stopped reader was never closed"
            posted.append(int((await alice.say(ROOM, BODY))["seq"]))
            sizes.add(hub.fast_sockets(ROOM_ID))
        # Falling behind (its transport's backlog, then its queue) took the stopped reader out
        # of the list, and only it.
        assert 2 in sizes
        for got in (a, c):
            assert await got.wait_for(len(posted)) == posted
