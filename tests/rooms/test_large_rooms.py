"""Large rooms (SPEC 2b, §12) over real sockets, on both stores (SQLite with the in-process
occupancy; PostgreSQL with the occupancy in Redis): the crossing of the threshold both ways with
the right events, ``members_online`` exact while two instances take joins and leaves, and a
storm of 2,000 sockets into one room costing O(N) frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from daarion_city.rooms.occupancy.redis import RedisRoomOccupancy
from tests.cluster import RedisServer
from tests.conftest import REDIS_URL, make_settings
from tests.rooms.test_snapshots import cluster as snapshots_cluster
from tests.support import Api, Socket, User, eventually, run_server

LARGE = 5  # large above 5 users online, small again below 3.75
Frame = dict[str, Any]


@pytest.fixture
def settings_overrides(
    request: pytest.FixtureRequest, backend: str, redis_prefix: str
) -> dict[str, Any]:
    """``CITY_LARGE_ROOM`` = 5; ``room.online`` every 0.2 s unless a test asks (indirectly)
    for another interval."""
    interval = getattr(request, "param", 0.2)
    values: dict[str, Any] = {"city_large_room": LARGE, "city_room_online_interval": interval}
    if backend == "postgresql":  # the occupancy in Redis, as a cluster keeps it
        values.update(redis_url=REDIS_URL, city_redis_prefix=redis_prefix)
    return values


async def until(ws: Socket, check: Callable[[Frame], bool], timeout: float = 5.0) -> list[Frame]:
    """Every frame up to and including the first that passes ``check``."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await ws.recv(timeout))
            if check(frames[-1]):
                return frames


def events(frames: list[Frame]) -> list[str]:
    return [f["event"] for f in frames]


def is_state(large: bool, online: int) -> Callable[[Frame], bool]:
    return lambda f: (
        f["event"] == "room.state" and f["large"] is large and f["members_online"] == online
    )


def is_online(online: int) -> Callable[[Frame], bool]:
    return lambda f: f["event"] == "room.online" and f["members_online"] == online


def is_count(online: int) -> Callable[[Frame], bool]:
    """The socket is told the count: by room.online, or by the crossing's fresh room.state."""
    return lambda f: (
        f.get("members_online") == online and f["event"] in ("room.online", "room.state")
    )


async def test_crossing_the_threshold_up_and_down(api: Api) -> None:
    """Per-user joins up to N; above N one fresh room.state (large) and then only room.online
    counts, no presence.update; below 3N/4 one fresh room.state (small) and per-user events
    again. Nothing is missed or doubled: the observer's view is right after each step."""
    observer = await api.guest("Olga")
    users = [await api.guest(f"User {i}") for i in range(7)]
    async with contextlib.AsyncExitStack() as stack:
        o = await stack.enter_async_context(observer.socket("general"))
        first = await o.expect("room.state")
        assert (first["members_online"], first["large"]) == (1, False)
        opened: dict[str, contextlib.AsyncExitStack] = {}

        async def open_(user: User) -> Frame:
            inner = contextlib.AsyncExitStack()
            ws = await inner.enter_async_context(user.socket("general"))
            opened[user.user_id] = inner
            return await ws.expect("room.state")

        async def close(user: User) -> None:
            await opened.pop(user.user_id).aclose()

        for user in users[:4]:  # 5 online: per-user joins
            await open_(user)
            got = await until(o, lambda f: f["event"] == "room.join")
            assert got == [{"event": "room.join", "room_id": first["room_id"], **_who(user)}]
        own = await open_(users[4])  # 6 > 5: large
        assert (own["large"], own["members_online"]) == (True, 6)
        assert own["online_members"][0]["user_id"] == users[4].user_id  # most recent first
        got = await until(o, is_state(True, 6))
        assert events(got) == ["room.state"], got  # no room.join for the one who crossed
        assert len(got[-1]["online_members"]) == 6
        for user in users[5:]:
            await open_(user)
        got = await until(o, is_online(8))
        assert set(events(got)) == {"room.online"}, got

        # A large room's sockets get no presence.update for its members.
        async with users[0].presence():
            await o.silent(0.6, ignore=("room.online",))

        for user in reversed(users[2:]):  # 8 -> 3: large until below 3.75
            await close(user)
            if user is users[3]:  # 4 left: still large
                got = await until(o, is_online(4))
                assert set(events(got)) == {"room.online"}, got
        got = await until(o, is_state(False, 3))
        assert set(events(got)) <= {"room.online", "room.state"}, got
        listed = {m["user_id"] for m in got[-1]["online_members"]}
        assert listed == {observer.user_id, users[0].user_id, users[1].user_id}

        await close(users[1])  # small again: per-user leaves, presence updates
        got = await until(o, lambda f: f["event"] == "room.leave")
        assert events(got) == ["room.leave"]
        assert got[0]["user_id"] == users[1].user_id
        async with users[0].presence():
            await o.expect("presence.update", user_id=users[0].user_id)
        detail = (await api.http.get("/city/rooms/general")).json()
        assert detail["members_online"] == 2
        for inner in opened.values():
            await inner.aclose()


def _who(user: User) -> dict[str, str]:
    return {"user_id": user.user_id, "name": user.name}


def cluster(database_url: str, tmp_path: Path, prefix: str) -> Any:
    return snapshots_cluster(
        database_url, tmp_path, prefix, city_large_room=LARGE, city_room_online_interval=0.2
    )


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_members_online_is_exact_while_two_instances_take_joins_and_leaves(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        watchers = [a.user("w_a", "Watcher A"), b.user("w_b", "Watcher B")]
        users = [(a if i % 2 else b).user(f"u_{i}", f"U{i}") for i in range(14)]
        async with contextlib.AsyncExitStack() as stack:
            observers = [await stack.enter_async_context(w.socket("general")) for w in watchers]
            for o in observers:
                await o.expect("room.state")
            sockets: dict[str, contextlib.AsyncExitStack] = {}

            async def open_(user: User) -> None:
                inner = contextlib.AsyncExitStack()
                await (await inner.enter_async_context(user.socket("general"))).expect("room.state")
                sockets[user.user_id] = inner

            await asyncio.gather(*(open_(u) for u in users))  # 16 online, from both
            for o in observers:
                await until(o, is_count(16))
            gone = users[::3]  # 5 leave, from both instances, at once
            await asyncio.gather(*(sockets.pop(u.user_id).aclose() for u in gone))
            for o in observers:
                got = await until(o, is_online(11))
                assert set(events(got)) == {"room.online"}, got
            for api in (a, b):

                async def exact(api: Api = api) -> bool:
                    detail = (await api.http.get("/city/rooms/general")).json()
                    ids = {m["user_id"] for m in detail["online_members"]}
                    return bool(detail["members_online"] == 11 and len(ids) == 11)

                await eventually(exact, 3, f"members_online on {api.server.port}")
            # Down to 2 + 1: below 3.75, small again on both, each with every member listed.
            await asyncio.gather(*(sockets.pop(u).aclose() for u in list(sockets)[:-1]))
            for o in observers:
                state = (await until(o, is_state(False, 3)))[-1]
                assert len(state["online_members"]) == 3
            for inner in sockets.values():
                await inner.aclose()


STORM = 2000


@pytest.mark.parametrize("settings_overrides", [1.0], indirect=True)
async def test_a_storm_of_sockets_into_one_room_costs_linear_frames(api: Api) -> None:
    """2,000 distinct users open sockets into one room at once: each gets room.state first;
    the frames sent in all are O(N): room.join only while the room was small (no n²/2 of
    them), one fresh room.state at the crossing, room.online at most once a second per
    socket; a message then reaches all of them once."""
    observer = await api.guest("Olga")
    users = [api.user(f"s_{i}", f"S{i}") for i in range(STORM)]
    seen: Counter[str] = Counter()
    firsts: list[str] = [""] * STORM
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        o = await stack.enter_async_context(observer.socket("general"))
        await o.expect("room.state")
        dialling = asyncio.Semaphore(200)  # clients dialling at once (under the listen backlog)

        async def one(i: int) -> Socket:
            async with dialling:
                ws = await stack.enter_async_context(users[i].socket("general"))
                firsts[i] = (await ws.recv(30))["event"]
                return ws

        began = loop.time()
        sockets = await asyncio.gather(*(one(i) for i in range(STORM)))
        assert firsts == ["room.state"] * STORM
        message = await observer.say("general", "after the storm")

        async def drain(ws: Socket) -> None:
            while (frame := await ws.recv(30))["event"] != "room.message":
                seen[frame["event"]] += 1
            assert frame["message"]["id"] == message["id"]
            seen["room.message"] += 1

        await asyncio.gather(*(drain(ws) for ws in [o, *sockets]))
        took = loop.time() - began
    assert seen["room.message"] == STORM + 1
    # Joins only while the room was small (at most LARGE of them, each to the sockets attached
    # then), one fresh room.state at the crossing to each socket attached then.
    assert seen["room.join"] <= LARGE * (STORM + 1), seen
    assert seen["room.state"] <= STORM + 1, seen
    ticks = took / api.server.settings.city_room_online_interval + 2
    assert seen["room.online"] <= (STORM + 1) * ticks, (seen, took)
    assert set(seen) <= {"room.join", "room.state", "room.online", "room.message"}, seen


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_occupancy_heals_after_redis_calls_fail(
    database_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Sockets close while Redis does not answer writes (CLIENT PAUSE on a Redis of the test's
    own): every removal fails (the calls time out). Once Redis answers again the users who left
    are no longer counted nor listed, within seconds, without any socket doing anything."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        redis_url=redis_server.url,
        city_large_room=LARGE,
        city_room_online_interval=0.2,
        database_timeout=0.5,  # bounds each Redis call too
    )
    async with run_server(settings) as server, contextlib.AsyncExitStack() as stack:
        api = Api(server)
        stack.push_async_callback(api.aclose)
        occupancy = server.resources.rooms.occupancy
        assert isinstance(occupancy, RedisRoomOccupancy)
        observer = api.user("olga", "Olga")
        o = await stack.enter_async_context(observer.socket("general"))
        await o.expect("room.state")
        sockets: list[contextlib.AsyncExitStack] = []

        async def open_(i: int) -> None:
            inner = contextlib.AsyncExitStack()
            ws = await inner.enter_async_context(api.user(f"h_{i}", f"H{i}").socket("general"))
            await ws.expect("room.state")
            sockets.append(inner)

        await asyncio.gather(*(open_(i) for i in range(40)))
        await until(o, is_count(41))
        admin = aioredis.Redis.from_url(redis_server.url)
        stack.push_async_callback(admin.aclose)
        await admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
        try:
            await asyncio.gather(*(s.aclose() for s in sockets[:30]))

            async def all_failed() -> bool:
                return occupancy.pending_removals == 30

            await eventually(all_failed, 15, "the removals did not fail")
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")

        async def healed() -> bool:
            detail = (await api.http.get("/city/rooms/general")).json()
            listed = {m["user_id"] for m in detail["online_members"]}
            return detail["members_online"] == 11 and len(listed) == 11

        await eventually(healed, 10, "the failed removals left users counted")
        assert occupancy.pending_removals == 0
        await until(o, is_count(11), timeout=5)
        for inner in sockets[30:]:
            await inner.aclose()
