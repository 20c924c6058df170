"""The public reads are answered from snapshots in memory, and every kind of change drops them:
its writer reads it back at once (read-your-writes), and the other instance of a cluster within
the bus's latency (well inside ``CITY_READ_SNAPSHOT_MAX_AGE``, set far out of reach here, so
only the change events can have refreshed them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daarion_city.config import Settings
from tests.conftest import REDIS_URL, make_settings
from tests.support import Api, User, eventually, open_socket, two_instances

READS = {
    "rooms": "/city/rooms",
    "room": "/city/rooms/general",
    "messages": "/city/rooms/general/messages?limit=20",
    "feed": "/city/feed",
    "presence": "/city/presence",
}


@pytest.fixture(params=["memory", "redis"])
def settings_overrides(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, Any]:
    """In process, the bus delivers an instance's own events while it publishes them; with
    Redis, later: only the drop right after the commit makes the writer read its write."""
    values: dict[str, Any] = {"city_read_snapshot_max_age": 3600.0}
    if request.param == "redis":
        values.update(redis_url=REDIS_URL, city_redis_prefix=redis_prefix)
    return values


async def snapshot_counts(api: Api) -> dict[tuple[str, str], float]:
    text = (await api.http.get("/metrics")).text
    pattern = r'city_read_snapshots_total\{read="(\w+)",result="(\w+)"\} ([0-9.e+]+)'
    return {(read, result): float(n) for read, result, n in re.findall(pattern, text)}


async def read(api: Api, path: str) -> Any:
    r = await api.http.get(path)
    assert r.status_code == 200, r.text
    return r.json()


async def room_in_list(api: Api, slug: str) -> dict[str, Any] | None:
    rooms: list[dict[str, Any]] = await read(api, "/city/rooms")
    return next((r for r in rooms if r["slug"] == slug), None)


async def general(api: Api) -> dict[str, Any]:
    room = await room_in_list(api, "general")
    assert room is not None
    return room


async def test_a_crowd_of_reads_costs_one_load_each(api: Api) -> None:
    before = await snapshot_counts(api)
    for _ in range(5):
        for path in READS.values():
            await read(api, path)
    after = await snapshot_counts(api)
    for name in READS:
        loads = after.get((name, "load"), 0) - before.get((name, "load"), 0)
        hits = after.get((name, "hit"), 0) - before.get((name, "hit"), 0)
        assert (loads, hits) == (1, 4), name


async def warm(api: Api) -> None:
    for path in READS.values():
        await read(api, path)


async def test_every_change_is_read_back_by_its_writer_at_once(api: Api) -> None:
    alice = await api.guest("Alice")
    # A post: the list's last message, the detail, the page and the feed.
    await warm(api)
    posted = await alice.say("general", "first news")
    assert (await general(api))["last_message"]["id"] == posted["id"]
    assert (await read(api, READS["room"]))["messages"][-1]["id"] == posted["id"]
    assert (await read(api, READS["messages"]))["messages"][-1]["id"] == posted["id"]
    assert (await read(api, READS["feed"]))[0]["payload"]["message_id"] == posted["id"]
    # A room's creation: the list and the feed.
    await warm(api)
    r = await alice.post("/city/rooms", {"slug": "harbour", "name": "Harbour"})
    assert r.status_code == 201, r.text
    assert await room_in_list(api, "harbour") is not None
    assert (await read(api, READS["feed"]))[0]["kind"] == "room_created"
    # A join and a leave: the member count in the list and the detail.
    await warm(api)
    count = (await general(api))["member_count"]
    assert (await alice.post("/city/rooms/general/join")).status_code == 200
    assert (await general(api))["member_count"] == count + 1
    assert (await read(api, READS["room"]))["member_count"] == count + 1
    assert (await read(api, READS["feed"]))[0]["kind"] == "member_joined"
    assert (await alice.post("/city/rooms/general/leave")).status_code == 200
    assert (await general(api))["member_count"] == count
    assert (await read(api, READS["room"]))["member_count"] == count
    # A socket opening (once its room.state arrived) and closing: who is online.
    await warm(api)
    async with alice.socket("general") as ws:
        await ws.expect("room.state")
        assert (await general(api))["members_online"] == 1
        detail = await read(api, READS["room"])
        assert [m["user_id"] for m in detail["online_members"]] == [alice.user_id]
    await eventually(
        lambda: _online_is(api, 0), 5, "the list still counts a closed socket's user online"
    )
    assert (await read(api, READS["room"]))["online_members"] == []
    # A presence change: who is online, and the status shown among a room's online members.
    async with alice.socket("general") as ws:
        await ws.expect("room.state")
        await warm(api)
        r = await alice.post("/city/presence/heartbeat", {"status": "away"})
        assert r.status_code == 200, r.text
        online = await read(api, READS["presence"])
        assert [(u["user_id"], u["status"]) for u in online["users"]] == [(alice.user_id, "away")]
        assert (await read(api, READS["room"]))["online_members"][0]["status"] == "away"


async def _online_is(api: Api, count: int) -> bool:
    room = await general(api)
    return bool(room["members_online"] == count)


# --- a cluster: PostgreSQL and Redis shared by two instances ---------------------------------


def cluster(database_url: str, tmp_path: Path, prefix: str, **overrides: Any) -> Any:
    """Two instances sharing PostgreSQL and Redis, their snapshots kept for an hour (and the
    caller's ``overrides`` of the settings)."""

    def settings(name: str) -> Settings:
        return make_settings(
            database_url,
            tmp_path / name,
            redis_url=REDIS_URL,
            city_redis_prefix=prefix,
            city_instances=2,
            **{"city_read_snapshot_max_age": 3600.0, **overrides},
        )

    return two_instances(settings)


async def seen(api: Api, path: str, check: Any, what: str) -> None:
    """``check`` holds for the read of ``path`` within the bus's latency (2 s at most)."""

    async def holds() -> bool:
        return bool(check(await read(api, path)))

    await eventually(holds, 2.0, what)


def listed(slug: str, check: Any) -> Any:
    return lambda rooms: any(r["slug"] == slug and check(r) for r in rooms)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_both_instances_of_a_cluster_see_every_change(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        alice = await a.guest("Alice")
        alice_on_b = User(b, alice.user_id, alice.name, alice.token)
        for api in (a, b):
            await warm(api)
        # A post on A, then one on B: each instance reads both.
        first = await alice.say("general", "from a")
        second = await alice_on_b.say("general", "from b")
        for api in (a, b):
            for message in (first, second):
                await seen(
                    api,
                    READS["messages"],
                    lambda page, m=message: m["id"] in [x["id"] for x in page["messages"]],
                    f"a post missing from the page on {api.server.port}",
                )
            await seen(
                api,
                "/city/rooms",
                listed("general", lambda r: r["last_message"]["id"] == second["id"]),
                "the list's last message is not the newest",
            )
            await seen(
                api,
                READS["room"],
                lambda d: d["messages"][-1]["id"] == second["id"],
                "the detail's newest message",
            )
            await seen(
                api,
                READS["feed"],
                lambda f: f[0]["payload"]["message_id"] == second["id"],
                "the feed",
            )
        # A room created on A.
        r = await alice.post("/city/rooms", {"slug": "harbour", "name": "Harbour"})
        assert r.status_code == 201, r.text
        await seen(b, "/city/rooms", listed("harbour", bool), "the new room on B")
        # A join and a leave on A.
        count = (await general(b))["member_count"]
        assert (await alice.post("/city/rooms/general/join")).status_code == 200
        for api in (a, b):
            await seen(api, READS["room"], lambda d: d["member_count"] == count + 1, "a join")
            await seen(
                api,
                "/city/rooms",
                listed("general", lambda r: r["member_count"] == count + 1),
                "a join in the list",
            )
        assert (await alice.post("/city/rooms/general/leave")).status_code == 200
        await seen(
            b, "/city/rooms", listed("general", lambda r: r["member_count"] == count), "a leave"
        )
        # A socket opening on A and closing; a presence change on A.
        async with alice.socket("general") as ws:
            await ws.expect("room.state")
            for api in (a, b):
                await seen(
                    api,
                    READS["room"],
                    lambda d: [m["user_id"] for m in d["online_members"]] == [alice.user_id],
                    "an opened socket's user among the online members",
                )
                await seen(
                    api,
                    "/city/rooms",
                    listed("general", lambda r: r["members_online"] == 1),
                    "online count",
                )
            async with open_socket(a.server, "/ws/city/presence", token=alice.token) as p:
                await p.expect("presence.bulk_update")
                await p.send({"event": "presence.heartbeat", "status": "away"})
                for api in (a, b):
                    await seen(
                        api,
                        READS["room"],
                        lambda d: d["online_members"][0]["status"] == "away",
                        "a status change in the detail",
                    )
                    await seen(
                        api,
                        READS["presence"],
                        lambda o: [u["status"] for u in o["users"]] == ["away"],
                        "a status change in who is online",
                    )
        for api in (a, b):
            await seen(api, READS["room"], lambda d: d["online_members"] == [], "a closed socket")
            await seen(
                api,
                "/city/rooms",
                listed("general", lambda r: r["members_online"] == 0),
                "online count 0",
            )
