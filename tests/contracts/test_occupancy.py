"""The room occupancy contract (``rooms/occupancy/base.py``), in process and on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from daarion_city.core.errors import Unavailable
from daarion_city.rooms.occupancy import (
    Crowd,
    Departure,
    MemoryRoomOccupancy,
    RoomOccupancy,
    Roster,
    create_occupancy,
)
from daarion_city.rooms.occupancy.redis import RedisRoomOccupancy
from tests.cluster import free_port
from tests.conftest import REDIS_URL
from tests.support import eventually

TTL = 30.0
LARGE = 4  # large above 4 users, small again below 3


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def occupancy(
    request: pytest.FixtureRequest, client: aioredis.Redis, redis_prefix: str
) -> AsyncIterator[RoomOccupancy]:
    redis = client if request.param == "redis" else None
    occupancy = create_occupancy(
        redis, instance_id="i_1", ttl=TTL, prefix=redis_prefix, large_room=LARGE
    )
    assert isinstance(occupancy, RedisRoomOccupancy if redis else MemoryRoomOccupancy)
    try:
        yield occupancy
    finally:
        await occupancy.close()


async def test_first_and_last_socket_of_a_user(occupancy: RoomOccupancy) -> None:
    assert (await occupancy.add("r1", "u_a", "Alice", "s1")).changed is True
    assert (await occupancy.add("r1", "u_a", "Alice", "s2")).changed is False  # a second tab
    assert (
        await occupancy.add("r1", "u_a", "Alice", "s1")
    ).changed is False  # the same socket again
    assert (await occupancy.add("r2", "u_a", "Alice", "s3")).changed is True  # another room
    assert (await occupancy.remove("r1", "u_a", "s1")).changed is False
    assert (await occupancy.remove("r1", "u_a", "s9")).changed is False  # unknown socket
    assert (await occupancy.remove("r1", "u_b", "s1")).changed is False  # unknown user
    assert (await occupancy.remove("r1", "u_a", "s2")).changed is True  # the last one: a leave
    assert (await occupancy.remove("r1", "u_a", "s2")).changed is False
    assert await occupancy.members("r1") == {}
    assert await occupancy.rooms_of("u_a") == ["r2"]


async def test_members_counts_and_rooms_count_users(occupancy: RoomOccupancy) -> None:
    await occupancy.add("r1", "u_a", "Alice", "s1")
    await occupancy.add("r1", "u_a", "Alicia", "s2")  # the latest name wins
    await occupancy.add("r1", "u_b", "Bob", "s3")
    await occupancy.add("r0", "u_a", "Alicia", "s4")
    assert await occupancy.members("r1") == {"u_a": "Alicia", "u_b": "Bob"}
    assert await occupancy.members("empty") == {}
    assert await occupancy.counts(["r1", "r0", "empty"]) == {"r1": 2, "r0": 1, "empty": 0}
    assert await occupancy.counts([]) == {}
    assert await occupancy.rooms_of("u_a") == ["r0", "r1"]  # sorted
    assert await occupancy.rooms_of("u_b") == ["r1"]
    assert await occupancy.rooms_of("nobody") == []
    for room, user, sock in [("r1", "u_a", "s1"), ("r1", "u_a", "s2"), ("r1", "u_b", "s3")]:
        await occupancy.remove(room, user, sock)
    assert await occupancy.counts(["r1", "r0"]) == {"r1": 0, "r0": 1}
    assert await occupancy.rooms_of("u_b") == []


async def test_concurrent_sockets_join_once_and_leave_once(occupancy: RoomOccupancy) -> None:
    added = [
        o.changed
        for o in await asyncio.gather(
            *(occupancy.add("r1", "u_a", "A", f"s{i}") for i in range(20))
        )
    ]
    assert sum(added) == 1
    removed = await asyncio.gather(*(occupancy.remove("r1", "u_a", f"s{i}") for i in range(20)))
    assert sum(o.changed for o in removed) == 1
    assert await occupancy.members("r1") == {}


async def test_the_mode_crosses_once_each_way_with_hysteresis(occupancy: RoomOccupancy) -> None:
    """Large above N users, small again below 3N/4: exactly the call that crosses says so; the
    count and mode come with every answer and from ``crowds`` and ``roster``."""
    seen = [await occupancy.add("r1", f"u_{i}", f"U{i}", f"s{i}") for i in range(6)]
    assert [(o.online, o.large, o.crossed) for o in seen] == [
        (1, False, False),
        (2, False, False),
        (3, False, False),
        (4, False, False),
        (5, True, True),
        (6, True, False),
    ]
    assert (await occupancy.add("r1", "u_5", "U5", "s5b")).online == 6  # a second tab
    gone = [await occupancy.remove("r1", f"u_{i}", f"s{i}") for i in range(5, 1, -1)]
    # u_5 still has a tab: 6, then 5, 4 (still large: not below 3), 3... 2 is below 3N/4 = 3
    assert [(o.changed, o.online, o.large, o.crossed) for o in gone] == [
        (False, 6, True, False),
        (True, 5, True, False),
        (True, 4, True, False),
        (True, 3, True, False),
    ]
    last = await occupancy.remove("r1", "u_5", "s5b")
    assert (last.online, last.large, last.crossed) == (2, False, True)
    assert await occupancy.crowds(["r1", "none"]) == {
        "r1": Crowd(2, False),
        "none": Crowd(0, False),
    }
    assert (await occupancy.add("r1", "u_7", "U7", "s7")).crossed is False  # 3: small


async def test_the_roster_is_bounded_and_most_recent_first(occupancy: RoomOccupancy) -> None:
    for i in range(6):
        await occupancy.add("r1", f"u_{i}", f"U{i}", f"s{i}")
    await occupancy.add("r1", "u_1", "U1", "s1b")  # active again
    roster = await occupancy.roster("r1", 3)
    assert roster == Roster(6, True, [("u_1", "U1"), ("u_5", "U5"), ("u_4", "U4")])
    assert await occupancy.roster("empty", 3) == Roster(0, False, [])


async def test_maintain_alone_finds_nobody_gone(occupancy: RoomOccupancy) -> None:
    await occupancy.add("r1", "u_a", "Alice", "s1")
    assert await occupancy.maintain(0.0) == []
    assert await occupancy.maintain(0.0) == []
    assert await occupancy.members("r1") == {"u_a": "Alice"}


async def test_a_dead_instance_is_cleared_by_exactly_one_other(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """An instance that stops maintaining (killed) loses its sockets once its alive key has run
    out: one of the others claims it and returns who thereby left; a user still connected
    through another instance stays."""
    dead = RedisRoomOccupancy(client, instance_id="i_dead", ttl=0.5, prefix=redis_prefix)
    b = RedisRoomOccupancy(client, instance_id="i_b", ttl=TTL, prefix=redis_prefix)
    c = RedisRoomOccupancy(client, instance_id="i_c", ttl=TTL, prefix=redis_prefix)
    await dead.add("r1", "u_a", "Alice", "d1")
    await dead.add("r1", "u_c", "Carol", "d2")
    await dead.add("r2", "u_a", "Alice", "d3")
    await b.add("r1", "u_c", "Carol", "b1")
    for instance in (dead, b, c):
        assert await instance.maintain(0.0) == []

    async def expired() -> bool:
        return not await client.exists(f"{redis_prefix}occ:alive:i_dead")

    await eventually(expired, 5, "the dead one's alive key ran out")
    found = await asyncio.gather(b.maintain(0.0), c.maintain(0.0), b.maintain(0.0))
    departures = sorted((d for ds in found for d in ds), key=lambda d: (d.room_id, d.user_id))
    assert departures == [Departure("r1", "u_a", "Alice"), Departure("r2", "u_a", "Alice")]
    assert await b.members("r1") == {"u_c": "Carol"}
    assert await b.rooms_of("u_a") == []
    assert await b.maintain(0.0) == []


async def test_maintain_removes_the_entries_its_instance_no_longer_has(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """Entries under this instance's id that its record lacks (written by a second object
    under the same id, as an add that failed after Redis ran it would leave) are removed, with
    the departures they make; the instance's own sockets stay."""
    occupancy = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL, prefix=redis_prefix)
    ghost = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL, prefix=redis_prefix)
    for i in range(300):
        await occupancy.add("r1", f"u_{i}", f"User {i}", f"s{i}")
    await ghost.add("r1", "u_b", "Bob", "g1")
    await ghost.add("r2", "u_0", "User 0", "g2")
    await ghost.add("r1", "u_1", "User 1", "g3")  # u_1 keeps a socket of the instance's own
    try:
        departures = await occupancy.maintain(0.0)
        assert sorted(departures, key=lambda d: d.room_id) == [
            Departure("r1", "u_b", "Bob"),
            Departure("r2", "u_0", "User 0"),
        ]
        assert occupancy.healed == 3
        members = await occupancy.members("r1")
        assert len(members) == 300
        assert "u_b" not in members
        assert await occupancy.members("r2") == {}
        assert await client.scard(f"{redis_prefix}occ:inst:i_1") == 300
        assert await occupancy.maintain(0.0) == []
    finally:
        await ghost.close()
        await occupancy.close()


async def test_an_instance_writes_its_sockets_again_when_redis_lost_them(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    occupancy = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL, prefix=redis_prefix)
    await occupancy.add("r1", "u_a", "Alice", "s1")
    await occupancy.add("r1", "u_b", "Bob", "s2")
    await occupancy.remove("r1", "u_b", "s2")
    await occupancy.maintain(0.0)
    keys = [k async for k in client.scan_iter(match=redis_prefix + "*")]
    await client.delete(*keys)  # Redis restarted empty
    assert await occupancy.members("r1") == {}
    assert await occupancy.maintain(0.0) == []
    assert await occupancy.members("r1") == {"u_a": "Alice"}  # not Bob: his socket closed
    assert await occupancy.rooms_of("u_a") == ["r1"]


async def test_close_forgets_the_instance(client: aioredis.Redis, redis_prefix: str) -> None:
    occupancy = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL, prefix=redis_prefix)
    await occupancy.maintain(0.0)
    assert await client.smembers(f"{redis_prefix}occ:instances") == {b"i_1"}
    await occupancy.close()
    assert await client.smembers(f"{redis_prefix}occ:instances") == set()
    assert not await client.exists(f"{redis_prefix}occ:alive:i_1")


async def test_a_redis_that_is_down_is_unavailable() -> None:
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5
    )
    occupancy = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL)
    try:
        for call in (
            occupancy.add("r1", "u_a", "Alice", "s1"),
            occupancy.remove("r1", "u_a", "s1"),
            occupancy.members("r1"),
            occupancy.counts(["r1"]),
            occupancy.rooms_of("u_a"),
            occupancy.maintain(0.0),
        ):
            with pytest.raises(Unavailable):
                await call
    finally:
        await client.aclose()


async def test_joins_and_leaves_still_count_after_redis_forgot_its_scripts(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    occupancy = RedisRoomOccupancy(client, instance_id="i_1", ttl=TTL, prefix=redis_prefix)
    try:
        await occupancy.add("r1", "u_a", "Alice", "s1")
        # Redis forgot its scripts (a restart, SCRIPT FLUSH): concurrent calls, sent in one
        # pipeline, get NOSCRIPT; they are sent again once the scripts are loaded.
        await client.script_flush()
        joined = await asyncio.gather(
            *(occupancy.add("r1", f"u_{i}", f"User {i}", f"s_{i}") for i in range(10))
        )
        assert [o.changed for o in joined] == [True] * 10
        assert [o.online for o in joined][-1] >= 10
        await client.script_flush()
        left = await occupancy.remove("r1", "u_a", "s1")
        assert left.changed is True
        assert left.online == 10
        assert (await occupancy.counts(["r1"])) == {"r1": 10}
    finally:
        await occupancy.close()
