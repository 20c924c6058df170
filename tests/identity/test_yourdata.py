"""Your data (SPEC sections 11 and 12): ``GET /city/me/export`` gives the caller everything the city
keeps about them and nothing of anyone else's; ``DELETE /city/me`` turns their messages into
tombstones that every open page sees, removes the rest, retires their id (every token refused,
every socket closed with 4401) on every instance and after restarts. On SQLite and PostgreSQL,
through a real server and real sockets."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from daarion_city.config import Settings
from daarion_city.core.clock import utcnow
from daarion_city.storage import yourdata as yourdata_store
from daarion_city.storage.tables import known_users, read_markers, room_members
from daarion_city.storage.tables_secondme import secondme_memory
from tests.conftest import make_settings
from tests.rooms.test_snapshots import cluster
from tests.support import Api, User, eventually, run_server

pytestmark = pytest.mark.timeout(60)
ROOM = "/city/rooms/agora"


async def a_life(api: Api) -> tuple[User, User, dict[str, Any]]:
    """Olga owns "agora"; Nina lives in the city: she joins, talks, reacts, reads, is mentioned,
    reports, tells Second Me about herself and says she is online."""
    olga, nina = await api.guest("Olga"), await api.guest("Nina")
    assert (await olga.post("/city/rooms", {"slug": "agora", "name": "Agora"})).status_code == 201
    assert (await nina.post(f"{ROOM}/join")).status_code == 200
    olgas = await olga.say("agora", f"olga-private-{secrets.token_hex(4)}")
    first = await nina.say("agora", "hello from nina")
    second = await nina.say("science", "nina in science")
    await olga.say("agora", f"thanks <@{nina.user_id}>")
    r = await api.http.put(f"{ROOM}/messages/{olgas['seq']}/reactions/👍", headers=nina.headers)
    assert r.status_code == 200, r.text
    assert (await nina.post(f"{ROOM}/read", {"seq": first["seq"]})).status_code in (200, 204)
    report = {"room_id": "room_city_agora", "seq": olgas["seq"], "reason": "spam"}
    r = await nina.post("/city/reports", report)
    assert r.status_code == 201, r.text
    about = f"nina-about-{secrets.token_hex(4)}"
    r = await api.http.put("/secondme/memory", json={"about": about}, headers=nina.headers)
    assert r.status_code == 200, r.text
    assert (await nina.post("/city/presence/heartbeat", {"status": "online"})).status_code == 200
    return olga, nina, {"olgas": olgas, "first": first, "second": second, "about": about}


async def test_the_export_holds_everything_about_the_caller_and_nothing_of_others(
    api: Api,
) -> None:
    olga, nina, made = await a_life(api)
    r = await nina.get("/city/me/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].startswith("attachment")
    assert made["olgas"]["body"].encode() not in r.content  # her report keeps no copy of it
    data = r.json()
    assert (data["user_id"], data["name"]) == (nina.user_id, "Nina")
    assert data["profile"]["user_id"] == nina.user_id
    assert [m["body"] for m in data["messages"]] == ["hello from nina", "nina in science"]
    assert [m["room_id"] for m in data["memberships"]] == ["room_city_agora"]
    assert data["roles"] == {"moderates": [], "owns": []}
    markers = {m["room_id"]: m["last_read_seq"] for m in data["read_markers"]}
    assert markers == {
        "room_city_agora": made["first"]["seq"],
        made["second"]["room_id"]: made["second"]["seq"],  # her own post marks it read
    }
    assert [(n["kind"], n["sender_id"]) for n in data["notifications"]] == [
        ("mention", olga.user_id)
    ]
    assert [(x["seq"], x["emoji"]) for x in data["reactions"]] == [(made["olgas"]["seq"], "👍")]
    assert [(x["reason"], x["status"]) for x in data["reports"]] == [("spam", "open")]
    assert data["presence"]["status"] == "online"
    assert data["secondme"]["memory"]["about"] == made["about"]
    assert data["secondme"]["history"] == []
    # Olga's export has her room and none of Nina's things.
    theirs = await olga.get("/city/me/export")
    assert theirs.json()["roles"]["owns"] == ["room_city_agora"]
    for private in (made["about"], b"hello from nina", b"nina in science"):
        assert (private if isinstance(private, bytes) else private.encode()) not in theirs.content
    assert (await api.http.get("/city/me/export")).status_code == 401


@pytest.mark.parametrize("settings_overrides", [{"city_export_rate": 0.001}])
async def test_exports_are_rate_limited(api: Api) -> None:
    nina = await api.guest("Nina")
    codes = [(await nina.get("/city/me/export")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


async def test_an_erasure_leaves_tombstones_everyone_sees_and_refuses_the_user(api: Api) -> None:
    olga, nina, made = await a_life(api)
    members = (await api.http.get(ROOM)).json()["member_count"]
    found = (await api.http.get("/city/search", params={"q": "hello from nina"})).json()
    assert [r["message"]["seq"] for r in found["results"]] == [made["first"]["seq"]]
    async with (
        olga.socket("agora") as watcher,
        nina.socket("agora") as room_ws,
        nina.presence() as presence_ws,
    ):
        await watcher.expect("room.state")
        await room_ws.expect("room.state")
        r = await api.http.delete("/city/me", headers=nina.headers)
        assert r.status_code == 202, r.text
        assert r.json() == {"user_id": nina.user_id, "status": "erased"}
        for ws in (room_ws, presence_ws):
            assert (await ws.expect("error"))["code"] == "unauthorized"
            assert await ws.closed_with() == 4401
        # Olga's page: her reaction goes, Nina's message becomes a tombstone, Nina leaves.
        reaction = await watcher.expect("room.reaction")
        assert reaction["reactions"] == []
        tombstone = (await watcher.expect("room.message.delete"))["message"]
        assert tombstone["seq"] == made["first"]["seq"]
        assert (tombstone["deleted_by"], tombstone["username"]) == ("erasure", "deleted user")
        assert tombstone["body"] == ""
        assert (await watcher.expect("room.member"))["membership"] == "leave"
    # Every page shows tombstones; the feed keeps no name of hers.
    for room, seq in (("agora", made["first"]["seq"]), ("science", made["second"]["seq"])):
        page = (await api.http.get(f"/city/rooms/{room}/messages")).json()["messages"]
        mine = [m for m in page if m["seq"] == seq]
        assert [(m["deleted"], m["deleted_by"], m["body"]) for m in mine] == [(True, "erasure", "")]
    found = (await api.http.get("/city/search", params={"q": "nina"})).json()
    assert found["results"] == []  # gone from search at once
    feed = (await api.http.get("/city/feed", params={"limit": 100})).text
    assert "Nina" not in feed
    assert "hello from nina" not in feed
    room = (await api.http.get(ROOM)).json()
    assert room["member_count"] == members - 1
    # Her token, and any token with her id, is refused from now on; sockets too.
    for path in ("/city/me", "/city/me/export", "/city/me/unread"):
        assert (await nina.get(path)).status_code == 401
    again = api.user(nina.user_id, "Nina")
    assert (await again.post(f"{ROOM}/messages", {"body": "I am back"})).status_code == 401
    async with again.socket("agora") as ws:
        assert await ws.closed_with() == 4401
    # Nothing else of hers is left.
    db = api.server.resources.db
    async with db.read() as conn:
        for table in (known_users, read_markers, room_members, secondme_memory):
            count = await conn.execute(
                sa.select(sa.func.count()).where(table.c.user_id == nina.user_id)
            )
            assert count.scalar_one() == 0, table.name
    # Olga's things stay.
    assert (await olga.get("/city/me")).status_code == 200
    r = await api.http.delete("/city/me", headers=nina.headers)
    assert r.status_code == 401


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_an_erasure_reaches_the_other_instance_and_outlives_a_restart(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        nina_a = await a.guest("Nina")
        nina_b = User(b, nina_a.user_id, nina_a.name, nina_a.token)
        await nina_b.say("science", "from b")
        async with nina_b.presence() as ws:
            r = await a.http.delete("/city/me", headers=nina_a.headers)
            assert r.status_code == 202
            assert (await ws.expect("error", timeout=2.0))["code"] == "unauthorized"
            assert await ws.closed_with(timeout=2.0) == 4401

        async def refused_on_b() -> bool:
            return (await nina_b.get("/city/me")).status_code == 401

        await eventually(refused_on_b, 2.0, "B still took the erased user's token")
    settings = make_settings(database_url, tmp_path / "c")
    async with run_server(settings) as server:
        c = Api(server)
        try:
            nina_c = User(c, nina_a.user_id, nina_a.name, nina_a.token)
            assert (await nina_c.get("/city/me")).status_code == 401
            fresh = c.user(nina_a.user_id, "Nina")
            assert (await fresh.get("/city/me")).status_code == 401
        finally:
            await c.aclose()


async def test_an_erasure_cut_short_is_finished_at_the_next_start(settings: Settings) -> None:
    async with run_server(settings) as server:
        api = Api(server)
        nina = await api.guest("Nina")
        said = await nina.say("science", "unfinished business")
        # The crash: her id was retired, and nothing of hers erased yet.
        async with server.resources.db.begin() as conn:
            await yourdata_store.retire(conn, nina.user_id, utcnow())
        await api.aclose()
    async with run_server(settings) as server:
        api = Api(server)
        try:
            assert (
                await User(api, nina.user_id, "Nina", nina.token).get("/city/me")
            ).status_code == 401

            async def erased() -> bool:
                page = (await api.http.get("/city/rooms/science/messages")).json()["messages"]
                return any(m["seq"] == said["seq"] and m["deleted_by"] == "erasure" for m in page)

            await eventually(erased, 5.0, "the erasure was not finished after the restart")
        finally:
            await api.aclose()
