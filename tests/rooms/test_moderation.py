"""Moderation (SPEC section 10 and 12): roles, bans, mutes, kicks, slow mode, moderators'
deletions and the audit log, over HTTP and real sockets, on SQLite and PostgreSQL, and across two
instances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from daarion_city.rooms.powers import NEEDS, ON_A_USER, Power, Rank, may
from tests.rooms.test_snapshots import cluster
from tests.support import Api, User, eventually, open_socket

ROOM = "/city/rooms/agora"


async def a_room(api: Api) -> tuple[User, User, User]:
    """Olga owns the room "agora", Mike moderates it, Nina is a member."""
    olga, mike, nina = [await api.guest(n) for n in ("Olga", "Mike", "Nina")]
    r = await olga.post("/city/rooms", {"slug": "agora", "name": "Agora"})
    assert r.status_code == 201, r.text
    assert r.json()["owner_id"] == olga.user_id
    r = await api.http.put(f"{ROOM}/moderators/{mike.user_id}", headers=olga.headers)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"user_id": olga.user_id, "role": "owner"},
        {"user_id": mike.user_id, "role": "moderator"},
    ]
    await nina.post(f"{ROOM}/join")
    return olga, mike, nina


def admin(api: Api, user_id: str = "u_admin") -> User:
    token = api.server.resources.auth.mint(user_id, "Admin", 3600, admin=True).token
    return User(api, user_id, "Admin", token)


async def delete(user: User, path: str) -> Any:
    return await user.api.http.delete(path, headers=user.headers)


def test_every_power_for_every_pair_of_ranks() -> None:
    """The authorization table: a power needs its rank, and a power on a user needs a higher
    rank than the user's."""
    table = {
        Power.UPDATE_ROOM: Rank.MODERATOR,
        Power.ADD_MODERATOR: Rank.OWNER,
        Power.REMOVE_MODERATOR: Rank.OWNER,
        Power.BAN: Rank.MODERATOR,
        Power.UNBAN: Rank.MODERATOR,
        Power.MUTE: Rank.MODERATOR,
        Power.UNMUTE: Rank.MODERATOR,
        Power.KICK: Rank.MODERATOR,
        Power.DELETE_MESSAGE: Rank.MODERATOR,
        Power.SEE_MODERATION: Rank.MODERATOR,
        Power.RESOLVE_REPORT: Rank.MODERATOR,
        Power.SUSPEND: Rank.ADMIN,
        Power.UNSUSPEND: Rank.ADMIN,
    }
    assert table == NEEDS
    for power, needs in table.items():
        for actor in Rank:
            if power in ON_A_USER:
                for target in Rank:
                    expected = actor >= needs and target < actor
                    assert may(actor, power, target) is expected, (power, actor, target)
                assert not may(actor, power, None)
            else:
                assert may(actor, power) is (actor >= needs), (power, actor)
    # What the SPEC says in words.
    assert may(Rank.MODERATOR, Power.BAN, Rank.MEMBER)
    assert not may(Rank.MODERATOR, Power.BAN, Rank.MODERATOR)
    assert may(Rank.OWNER, Power.BAN, Rank.MODERATOR)
    assert not may(Rank.OWNER, Power.BAN, Rank.OWNER)
    assert may(Rank.ADMIN, Power.KICK, Rank.OWNER)
    assert not may(Rank.MODERATOR, Power.ADD_MODERATOR, Rank.MEMBER)


async def test_a_ban_refuses_posts_joins_and_sockets_and_closes_open_ones(api: Api) -> None:
    olga, mike, nina = await a_room(api)
    async with nina.socket("agora") as ws:
        await ws.expect("room.state")
        r = await mike.post(f"{ROOM}/bans", {"user_id": nina.user_id, "reason": "spam"})
        assert r.status_code == 201, r.text
        ban = r.json()
        assert (ban["user_id"], ban["by"], ban["reason"], ban["expires_at"]) == (
            nina.user_id,
            mike.user_id,
            "spam",
            None,
        )
        error = await ws.expect("error")
        assert error["code"] == "banned"
        assert await ws.closed_with() == 4403
    r = await nina.post(f"{ROOM}/messages", {"body": "let me in"})
    assert (r.status_code, r.json()["code"], r.json()["expires_at"]) == (403, "banned", None)
    r = await nina.post(f"{ROOM}/join")
    assert (r.status_code, r.json()["code"]) == (403, "banned")
    async with nina.socket("agora") as ws:
        assert (await ws.expect("error"))["code"] == "banned"
        assert await ws.closed_with() == 4403
    # Public reads stay public; the ban ended her membership.
    assert (await nina.get(f"{ROOM}/messages")).status_code == 200
    listed = (await mike.get(f"{ROOM}/bans")).json()
    assert [b["user_id"] for b in listed] == [nina.user_id]
    assert (await nina.get(f"{ROOM}/bans")).status_code == 403
    r = await delete(mike, f"{ROOM}/bans/{nina.user_id}")
    assert (r.status_code, r.json()) == (200, [])
    assert (await nina.say("agora", "back"))["body"] == "back"
    r = await delete(mike, f"{ROOM}/bans/{nina.user_id}")
    assert r.status_code == 404
    assert olga.user_id != nina.user_id


async def test_a_mute_keeps_the_user_reading_and_ends_by_itself(api: Api) -> None:
    _, mike, nina = await a_room(api)
    earlier = await nina.say("agora", "before")
    r = await mike.post(f"{ROOM}/mutes", {"user_id": nina.user_id, "duration_s": 1})
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] is not None
    async with nina.socket("agora") as ws:
        await ws.expect("room.state")
        await ws.send({"event": "room.message.send", "body": "hello?", "client_msg_id": "c1"})
        error = await ws.expect("error")
        assert (error["code"], error["client_msg_id"]) == ("muted", "c1")
        assert error["expires_at"] is not None
        seq = earlier["seq"]
        r = await nina.api.http.patch(
            f"{ROOM}/messages/{seq}", json={"body": "edited"}, headers=nina.headers
        )
        assert (r.status_code, r.json()["code"]) == (403, "muted")
        r = await nina.api.http.put(
            f"{ROOM}/messages/{seq}/reactions/%F0%9F%91%8D", headers=nina.headers
        )
        assert (r.status_code, r.json()["code"]) == (403, "muted")
        # Her own deletion stays hers to make; she still reads the room live.
        assert (await delete(nina, f"{ROOM}/messages/{seq}")).status_code == 200
        await ws.expect("room.message.delete")
        # The mute ends by itself.
        await asyncio.sleep(1.1)
        await ws.send({"event": "room.message.send", "body": "I'm back", "client_msg_id": "c2"})
        ack = await ws.expect("room.message.ack", client_msg_id="c2")
        assert ack["message"]["body"] == "I'm back"


async def test_a_replay_is_answered_before_sanctions(api: Api) -> None:
    _, mike, nina = await a_room(api)
    stored = await nina.say("agora", "sent once", client_msg_id="once")
    r = await mike.post(f"{ROOM}/mutes", {"user_id": nina.user_id})
    assert r.status_code == 201
    r = await nina.post(f"{ROOM}/messages", {"body": "sent once", "client_msg_id": "once"})
    assert r.status_code == 201, r.text
    assert (r.json()["id"], r.headers.get("idempotent-replayed")) == (stored["id"], "true")
    r = await nina.post(f"{ROOM}/messages", {"body": "new", "client_msg_id": "twice"})
    assert r.status_code == 403


async def test_a_kick_ends_the_membership_and_closes_the_sockets(api: Api) -> None:
    _, mike, nina = await a_room(api)
    async with nina.socket("agora") as ws:
        await ws.expect("room.state")
        r = await mike.post(f"{ROOM}/kick", {"user_id": nina.user_id, "reason": "calm down"})
        assert r.status_code == 200, r.text
        assert (await ws.expect("error"))["code"] == "kicked"
        assert await ws.closed_with() == 4403
    mine = (await nina.get("/city/me/unread")).json()
    assert "room_city_agora" not in {c["room_id"] for c in mine}
    # She may come back.
    assert (await nina.post(f"{ROOM}/join")).status_code == 200
    assert (await nina.say("agora", "sorry"))["body"] == "sorry"


async def test_slow_mode_spaces_a_members_posts_but_not_a_moderators(api: Api) -> None:
    olga, mike, nina = await a_room(api)
    r = await nina.api.http.patch(ROOM, json={"slow_mode_s": 60}, headers=nina.headers)
    assert r.status_code == 403
    r = await mike.api.http.patch(ROOM, json={"slow_mode_s": 60}, headers=mike.headers)
    assert r.status_code == 200, r.text
    assert r.json()["slow_mode_s"] == 60
    await nina.say("agora", "first")
    r = await nina.post(f"{ROOM}/messages", {"body": "second"})
    assert (r.status_code, r.json()["code"]) == (429, "slow_mode")
    assert 50 <= int(r.headers["retry-after"]) <= 60
    for _ in range(3):
        await mike.say("agora", "moderators are exempt")
        await olga.say("agora", "owners too")
    for bad in ({"slow_mode_s": -1}, {"slow_mode_s": 21601}, {"name": ""}, {"owner": "x"}):
        r = await mike.api.http.patch(ROOM, json=bad, headers=mike.headers)
        assert r.status_code == 422, bad


async def test_moderators_delete_others_messages_and_every_action_is_audited(api: Api) -> None:
    olga, mike, nina = await a_room(api)
    hers = await nina.say("agora", "spam spam")
    owners = await olga.say("agora", "house rules")
    # A member cannot delete someone else's; a moderator cannot delete the owner's.
    assert (await delete(nina, f"{ROOM}/messages/{owners['seq']}")).status_code == 403
    assert (await delete(mike, f"{ROOM}/messages/{owners['seq']}")).status_code == 403
    r = await delete(mike, f"{ROOM}/messages/{hers['seq']}")
    assert r.status_code == 200, r.text
    assert (r.json()["deleted"], r.json()["deleted_by"]) == (True, "moderator")
    # Equal or higher ranks, and moderators naming moderators, are refused.
    assert (await mike.post(f"{ROOM}/bans", {"user_id": olga.user_id})).status_code == 403
    assert (await nina.post(f"{ROOM}/mutes", {"user_id": mike.user_id})).status_code == 403
    r = await api.http.put(f"{ROOM}/moderators/{nina.user_id}", headers=mike.headers)
    assert r.status_code == 403
    # An admin acts in a room they do not own.
    boss = admin(api)
    r = await boss.post(f"{ROOM}/mutes", {"user_id": olga.user_id, "duration_s": 60})
    assert r.status_code == 201, r.text
    assert (await delete(boss, f"{ROOM}/mutes/{olga.user_id}")).status_code == 200
    await mike.post(f"{ROOM}/kick", {"user_id": nina.user_id})
    await mike.api.http.patch(ROOM, json={"description": "be kind"}, headers=mike.headers)
    r = await delete(olga, f"{ROOM}/moderators/{mike.user_id}")
    assert r.json() == [{"user_id": olga.user_id, "role": "owner"}]
    entries = (await olga.get(f"{ROOM}/audit")).json()
    assert [(e["action"], e["actor_id"]) for e in entries] == [
        ("moderator_removed", olga.user_id),
        ("room_updated", mike.user_id),
        ("kick", mike.user_id),
        ("unmute", boss.user_id),
        ("mute", boss.user_id),
        ("message_deleted", mike.user_id),
        ("moderator_added", olga.user_id),
    ]
    assert entries[5]["target_seq"] == hers["seq"]
    assert entries[5]["target_user_id"] == nina.user_id
    older = (await olga.get(f"{ROOM}/audit", before=entries[4]["id"], limit=1)).json()
    assert [e["action"] for e in older] == ["message_deleted"]
    assert (await nina.get(f"{ROOM}/audit")).status_code == 403
    assert (await mike.get(f"{ROOM}/audit")).status_code == 403  # no longer a moderator


async def test_bad_moderation_requests_get_typed_errors(api: Api) -> None:
    _, mike, nina = await a_room(api)
    for body in (
        {"user_id": nina.user_id, "duration_s": 0},
        {"user_id": nina.user_id, "duration_s": -5},
        {"user_id": nina.user_id, "duration_s": 10**9},
        {"user_id": "not a user!"},
        {"user_id": nina.user_id, "reason": "x" * 501},
        {},
    ):
        r = await mike.post(f"{ROOM}/bans", body)
        assert r.status_code == 422, body
    r = await mike.post("/city/rooms/nowhere/bans", {"user_id": nina.user_id})
    assert (r.status_code, r.json()["code"]) == (404, "room_not_found")
    r = await api.http.post(f"{ROOM}/bans", json={"user_id": nina.user_id})
    assert r.status_code == 401
    assert (await mike.get(f"{ROOM}/bans")).json() == []  # nothing half-written


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_ban_on_one_instance_closes_the_socket_on_the_other(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        olga = await a.guest("Olga")
        assert (
            await olga.post("/city/rooms", {"slug": "agora", "name": "Agora"})
        ).status_code == 201
        nina_a = await a.guest("Nina")
        nina_b = User(b, nina_a.user_id, nina_a.name, nina_a.token)
        await nina_b.say("agora", "hello from b")  # B has read the room's policy
        async with nina_b.socket("agora") as ws:
            await ws.expect("room.state")
            r = await olga.post(f"{ROOM}/bans", {"user_id": nina_a.user_id})
            assert r.status_code == 201
            assert (await ws.expect("error", timeout=1.0))["code"] == "banned"
            assert await ws.closed_with(timeout=1.0) == 4403
        r = await nina_b.post(f"{ROOM}/messages", {"body": "on b"})
        assert (r.status_code, r.json()["code"]) == (403, "banned")


async def test_reports_are_filed_once_listed_by_scope_and_resolved_with_each_action(
    api: Api,
) -> None:
    olga, mike, nina = await a_room(api)
    rex = await api.guest("Rex")
    spam = [await nina.say("agora", f"buy now {i}") for i in range(4)]
    elsewhere = await rex.say("general", "other room")
    filed = []
    for message in spam:
        r = await rex.post(
            "/city/reports", {"room_id": "agora", "seq": message["seq"], "reason": "spam"}
        )
        assert r.status_code == 201, r.text
        filed.append(r.json())
    assert filed[0]["status"] == "open"
    assert "reported_text" not in filed[0]  # a reporter does not get the copy back
    # A repeat answers the open report.
    r = await rex.post(
        "/city/reports", {"room_id": "agora", "seq": spam[0]["seq"], "reason": "again"}
    )
    assert (r.status_code, r.json()["id"]) == (200, filed[0]["id"])
    r = await rex.post(
        "/city/reports", {"room_id": "general", "seq": elsewhere["seq"], "reason": "x"}
    )
    other = r.json()
    # Bad reports.
    r = await rex.post("/city/reports", {"room_id": "agora", "seq": 10_000, "reason": "x"})
    assert (r.status_code, r.json()["code"]) == (404, "message_not_found")
    for bad in (
        {"room_id": "agora", "seq": 1, "reason": ""},
        {"room_id": "agora", "seq": 0, "reason": "x"},
    ):
        assert (await rex.post("/city/reports", bad)).status_code == 422
    # Scope: the room's moderators see its reports with the reported text; the reporter sees
    # his own; a member sees none; a moderator of another room does not see them.
    mods = (await mike.get("/city/reports", status="open")).json()
    assert {r["id"] for r in mods} == {f["id"] for f in filed}
    assert mods[0]["reported_text"].startswith("buy now")
    assert {r["id"] for r in (await rex.get("/city/reports")).json()} == {
        f["id"] for f in filed
    } | {other["id"]}
    assert (await nina.get("/city/reports")).json() == []
    r = await rex.post(f"/city/reports/{filed[0]['id']}/resolve", {"action": "dismiss"})
    assert r.status_code == 403
    r = await nina.post(f"/city/reports/{filed[0]['id']}/resolve", {"action": "dismiss"})
    assert (r.status_code, r.json()["code"]) == (404, "report_not_found")
    # Each action.
    r = await mike.post(f"/city/reports/{filed[0]['id']}/resolve", {"action": "dismiss"})
    assert (r.json()["status"], r.json()["action"], r.json()["resolved_by"]) == (
        "resolved",
        "dismiss",
        mike.user_id,
    )
    r = await mike.post(f"/city/reports/{filed[0]['id']}/resolve", {"action": "dismiss"})
    assert (r.status_code, r.json()["code"]) == (409, "report_resolved")
    r = await mike.post(f"/city/reports/{filed[1]['id']}/resolve", {"action": "delete_message"})
    assert r.status_code == 200, r.text
    page = (await api.http.get(f"{ROOM}/messages")).json()["messages"]
    (deleted,) = [m for m in page if m["seq"] == spam[1]["seq"]]
    assert (deleted["deleted"], deleted["deleted_by"]) == (True, "moderator")
    r = await mike.post(
        f"/city/reports/{filed[2]['id']}/resolve", {"action": "mute_author", "duration_s": 600}
    )
    assert r.status_code == 200, r.text
    r = await nina.post(f"{ROOM}/messages", {"body": "hi"})
    assert (r.status_code, r.json()["code"]) == (403, "muted")
    r = await olga.post(f"/city/reports/{filed[3]['id']}/resolve", {"action": "ban_author"})
    assert r.status_code == 200, r.text
    r = await nina.post(f"{ROOM}/messages", {"body": "hi"})
    assert (r.status_code, r.json()["code"]) == (403, "banned")
    assert [r["status"] for r in (await mike.get("/city/reports", room="agora")).json()] == [
        "resolved"
    ] * 4
    actions = [e["action"] for e in (await olga.get(f"{ROOM}/audit")).json()]
    assert actions[:7] == [
        "report_resolved",
        "ban",
        "report_resolved",
        "mute",
        "report_resolved",
        "message_deleted",
        "report_resolved",
    ]


async def test_a_suspension_refuses_everything_but_me_and_closes_every_socket(api: Api) -> None:
    _, _, nina = await a_room(api)
    boss = admin(api)
    async with nina.socket("agora") as room_ws, nina.presence() as presence_ws:
        await room_ws.expect("room.state")
        r = await nina.post(f"/admin/users/{nina.user_id}/suspend", {"reason": "x"})
        assert r.status_code == 403  # not an admin
        r = await boss.post(
            f"/admin/users/{nina.user_id}/suspend", {"reason": "abuse", "duration_s": 3600}
        )
        assert r.status_code == 200, r.text
        assert r.json()["expires_at"] is not None
        for ws in (room_ws, presence_ws):
            assert (await ws.expect("error"))["code"] == "suspended"
            assert await ws.closed_with() == 4403
    r = await nina.post(f"{ROOM}/messages", {"body": "hello"})
    assert (r.status_code, r.json()["code"]) == (403, "suspended")
    assert r.json()["expires_at"] is not None
    assert (await nina.get("/city/me/unread")).status_code == 403
    r = await nina.post("/auth/guest", {"name": "Nina again"})  # no fresh identity for her
    assert (r.status_code, r.json()["code"]) == (403, "suspended")
    me = (await nina.get("/city/me")).json()
    assert (me["suspended"], me["admin"]) == (True, False)
    for path in ("/ws/city/presence", "/ws/city/rooms/agora"):
        async with open_socket(api.server, path, token=nina.token) as ws:
            assert (await ws.expect("error"))["code"] == "suspended"
            assert await ws.closed_with() == 4403
    # Admins cannot suspend admins; lifting lets her back; both are in the city's audit log.
    assert (await boss.post(f"/admin/users/{boss.user_id}/suspend")).status_code == 403
    assert (await nina.get("/admin/audit")).status_code == 403
    r = await boss.api.http.delete(f"/admin/users/{nina.user_id}/suspend", headers=boss.headers)
    assert r.status_code == 200, r.text
    assert (await nina.say("agora", "back"))["body"] == "back"
    assert (await boss.get("/city/me")).json()["admin"] is True
    entries = (await boss.get("/admin/audit")).json()
    assert [(e["action"], e["target_user_id"]) for e in entries[:2]] == [
        ("unsuspend", nina.user_id),
        ("suspend", nina.user_id),
    ]
    r = await boss.api.http.delete(f"/admin/users/{nina.user_id}/suspend", headers=boss.headers)
    assert (r.status_code, r.json()["code"]) == (404, "not_suspended")


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_kicks_timed_bans_and_suspensions_reach_the_other_instance(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        olga = await a.guest("Olga")
        assert (
            await olga.post("/city/rooms", {"slug": "agora", "name": "Agora"})
        ).status_code == 201
        nina_a = await a.guest("Nina")
        nina_b = User(b, nina_a.user_id, nina_a.name, nina_a.token)
        await nina_b.post(f"{ROOM}/join")
        # A room's new settings show on B (which read the room before).
        assert (await b.http.get(ROOM)).json()["slow_mode_s"] == 0
        r = await a.http.patch(ROOM, json={"name": "Forum", "slow_mode_s": 5}, headers=olga.headers)
        assert r.status_code == 200

        async def b_shows_it() -> bool:
            room = (await b.http.get(ROOM)).json()
            return bool(room["name"] == "Forum" and room["slow_mode_s"] == 5)

        await eventually(b_shows_it, 2.0, "B kept the room's old settings")
        await a.http.patch(ROOM, json={"slow_mode_s": 0}, headers=olga.headers)
        # A kick on A closes Nina's socket on B; she comes back.
        async with nina_b.socket("agora") as ws:
            await ws.expect("room.state")
            assert (await olga.post(f"{ROOM}/kick", {"user_id": nina_a.user_id})).status_code == 200
            assert (await ws.expect("error", timeout=1.0))["code"] == "kicked"
            assert await ws.closed_with(timeout=1.0) == 4403
        # A ban of one second on A: refused on B, then over by itself on B.
        r = await olga.post(f"{ROOM}/bans", {"user_id": nina_a.user_id, "duration_s": 1})
        assert r.status_code == 201
        r = await nina_b.post(f"{ROOM}/messages", {"body": "now?"})
        assert (r.status_code, r.json()["code"]) == (403, "banned")
        await asyncio.sleep(1.1)
        assert (await nina_b.say("agora", "back on b"))["body"] == "back on b"
        # A suspension made on A closes her presence socket on B and refuses her calls there,
        # until it is lifted on A.
        boss = admin(a)
        async with nina_b.presence() as ws:
            r = await boss.post(f"/admin/users/{nina_a.user_id}/suspend", {"reason": "abuse"})
            assert r.status_code == 200
            assert (await ws.expect("error", timeout=1.0))["code"] == "suspended"
            assert await ws.closed_with(timeout=1.0) == 4403
        r = await nina_b.post(f"{ROOM}/messages", {"body": "b?"})
        assert (r.status_code, r.json()["code"]) == (403, "suspended")
        r = await a.http.delete(f"/admin/users/{nina_a.user_id}/suspend", headers=boss.headers)
        assert r.status_code == 200

        async def lifted_on_b() -> bool:
            r = await nina_b.post(f"{ROOM}/messages", {"body": "free"})
            return r.status_code == 201

        await eventually(lifted_on_b, 2.0, "the suspension was still in force on B")


@pytest.mark.parametrize(
    "settings_overrides", [{"city_message_rate": 0.001, "city_message_burst": 2}]
)
async def test_a_replay_is_answered_before_the_rate_limit(api: Api) -> None:
    nina = await api.guest("Nina")
    first = await nina.say("science", "one", client_msg_id="a")
    await nina.say("science", "two", client_msg_id="b")
    r = await nina.post("/city/rooms/science/messages", {"body": "three", "client_msg_id": "c"})
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
    r = await nina.post("/city/rooms/science/messages", {"body": "one", "client_msg_id": "a"})
    assert r.status_code == 201, r.text
    assert (r.json()["id"], r.headers.get("idempotent-replayed")) == (first["id"], "true")
