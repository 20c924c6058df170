"""Read markers, unread and mention counts, notifications and the personal events (SPEC section 9
and 12), over HTTP and real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.rooms.test_snapshots import cluster
from tests.support import Api, User, eventually


async def unread_of(user: User, room_id: str) -> dict[str, Any]:
    r = await user.get("/city/me/unread")
    assert r.status_code == 200, r.text
    (counts,) = [c for c in r.json() if c["room_id"] == room_id]
    return dict(counts)


async def read(user: User, room: str, seq: int) -> dict[str, Any]:
    r = await user.post(f"/city/rooms/{room}/read", {"seq": seq})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_counts_are_exact_through_posts_deletions_and_markers(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    await bob.post("/city/rooms/science/join")
    room_id = "room_city_science"
    assert await unread_of(bob, room_id) == {
        "room_id": room_id,
        "last_read_seq": 0,
        "unread_count": 0,
        "mention_count": 0,
    }
    sent = [await alice.say("science", f"m{i}") for i in range(5)]
    assert (await unread_of(bob, room_id))["unread_count"] == 5
    # Bob's own message moves his marker to it: everything up to it is read.
    mine = await bob.say("science", "caught up")
    assert await unread_of(bob, room_id) == {
        "room_id": room_id,
        "last_read_seq": mine["seq"],
        "unread_count": 0,
        "mention_count": 0,
    }
    later = [await alice.say("science", f"n{i}") for i in range(3)]
    assert (await unread_of(bob, room_id))["unread_count"] == 3
    # A deletion after the marker takes a message away; one before it changes nothing.
    r = await alice.api.http.delete(
        f"/city/rooms/science/messages/{later[0]['seq']}", headers=alice.headers
    )
    assert r.status_code == 200
    r = await alice.api.http.delete(
        f"/city/rooms/science/messages/{sent[0]['seq']}", headers=alice.headers
    )
    assert r.status_code == 200
    # Edits and reactions take seqs but are no messages.
    r = await alice.api.http.put(
        f"/city/rooms/science/messages/{later[1]['seq']}/reactions/%F0%9F%91%8D",
        headers=alice.headers,
    )
    assert r.status_code == 200
    assert (await unread_of(bob, room_id))["unread_count"] == 2
    # The marker moves to a seq in the middle, never back; the answer is the counts.
    answer = await read(bob, "science", later[1]["seq"])
    assert answer == {
        "room_id": room_id,
        "last_read_seq": later[1]["seq"],
        "unread_count": 1,
        "mention_count": 0,
    }
    assert (await read(bob, "science", 1))["last_read_seq"] == later[1]["seq"]
    newest = (await api.http.get("/city/rooms/science")).json()
    last_seq = max(m["seq"] for m in newest["messages"]) + 3  # the deletions and the reaction
    done = await read(bob, "science", last_seq)
    assert (done["unread_count"], done["last_read_seq"]) == (0, last_seq)
    # Her own message reads a room up to it for its author.
    await alice.say("general", "mine")
    assert (await unread_of(alice, "room_city_general"))["unread_count"] == 0


async def test_unread_lists_joined_and_default_rooms_only(api: Api) -> None:
    bob = await api.guest("Bob")
    rooms = {c["room_id"] for c in (await bob.get("/city/me/unread")).json()}
    listed = (await api.http.get("/city/rooms")).json()
    defaults = {r["id"] for r in listed if r["is_default"]}
    assert rooms == defaults
    await bob.post("/city/rooms/science/join")
    rooms = {c["room_id"] for c in (await bob.get("/city/me/unread")).json()}
    assert rooms == defaults | {"room_city_science"}
    await bob.post("/city/rooms/science/leave")
    rooms = {c["room_id"] for c in (await bob.get("/city/me/unread")).json()}
    assert rooms == defaults


async def test_a_marker_past_the_newest_seq_is_refused(api: Api) -> None:
    bob = await api.guest("Bob")
    message = await bob.say("science", "hello")
    r = await bob.post("/city/rooms/science/read", {"seq": message["seq"] + 1})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_seq")
    for bad in ({"seq": -1}, {"seq": "x"}, {}, {"seq": 1, "extra": 1}, {"seq": 2**53}):
        r = await bob.post("/city/rooms/science/read", bad)
        assert r.status_code == 422, bad
    r = await bob.post("/city/rooms/nowhere/read", {"seq": 1})
    assert (r.status_code, r.json()["code"]) == (404, "room_not_found")
    r = await api.http.post("/city/rooms/science/read", json={"seq": 1})
    assert r.status_code == 401


async def test_mentions_and_replies_notify_known_users_once(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    await bob.get("/city/me")  # Bob has been seen: he is known
    async with bob.presence() as bob_ws:
        bulk = await bob_ws.expect("unread.bulk")
        assert {c["room_id"] for c in bulk["rooms"]} >= {"room_city_general"}
        question = await bob.say("general", "anyone?")
        mention = await alice.say("general", f"hey <@{bob.user_id}> and <@u_nobody_known>")
        note = await bob_ws.expect("notification", kind="mention")
        assert (note["room_id"], note["message"]["id"], note["read"]) == (
            "room_city_general",
            mention["id"],
            False,
        )
        update = await bob_ws.expect("unread.update", room_id="room_city_general")
        assert update["mention_count"] >= 1
        r = await alice.post(
            "/city/rooms/general/messages",
            {"body": f"<@{bob.user_id}> yes", "reply_to_seq": question["seq"]},
        )
        both = r.json()
        reply = await bob_ws.expect("notification", kind="mention")  # one per message
        assert reply["message"]["id"] == both["id"]
        r = await alice.post(
            "/city/rooms/general/messages", {"body": "me", "reply_to_seq": question["seq"]}
        )
        replied = await bob_ws.expect("notification", kind="reply")
        assert replied["message"]["id"] == r.json()["id"]
    listed = (await bob.get("/city/me/notifications")).json()
    assert [n["message"]["id"] for n in listed] == [r.json()["id"], both["id"], mention["id"]]
    assert [n["kind"] for n in listed] == ["reply", "mention", "mention"]
    counts = await unread_of(bob, "room_city_general")
    assert (counts["unread_count"], counts["mention_count"]) == (3, 3)
    # Paging with before; a foreign or unknown cursor is refused.
    older = (await bob.get("/city/me/notifications", before=listed[0]["id"], limit=1)).json()
    assert [n["id"] for n in older] == [listed[1]["id"]]
    r = await alice.get("/city/me/notifications", before=listed[0]["id"])
    assert (r.status_code, r.json()["code"]) == (404, "notification_not_found")
    # Reading marks them read; a deleted message's notification shows the tombstone and no
    # longer counts.
    await read(bob, "general", mention["seq"])
    listed = (await bob.get("/city/me/notifications")).json()
    assert [n["read"] for n in listed] == [False, False, True]
    r = await alice.api.http.delete(
        f"/city/rooms/general/messages/{both['seq']}", headers=alice.headers
    )
    assert r.status_code == 200
    listed = (await bob.get("/city/me/notifications")).json()
    assert listed[1]["message"]["deleted"] is True
    assert listed[1]["message"]["body"] == ""
    counts = await unread_of(bob, "room_city_general")
    assert (counts["unread_count"], counts["mention_count"]) == (1, 1)
    # Alice mentioning herself, or anyone mentioning an unknown user, notifies nobody.
    await alice.say("general", f"me <@{alice.user_id}>")
    assert (await alice.get("/city/me/notifications")).json() == []


async def test_an_edit_that_adds_a_mention_notifies_once(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    async with bob.presence() as bob_ws:
        message = await alice.say("general", "hello")
        path = f"/city/rooms/general/messages/{message['seq']}"
        r = await alice.api.http.patch(
            path, json={"body": f"hello <@{bob.user_id}>"}, headers=alice.headers
        )
        assert r.status_code == 200, r.text
        note = await bob_ws.expect("notification")
        assert note["message"]["body"] == f"hello <@{bob.user_id}>"
        r = await alice.api.http.patch(
            path, json={"body": f"hello again <@{bob.user_id}>"}, headers=alice.headers
        )
        assert r.status_code == 200
        await bob_ws.silent(0.5, ignore=("unread.update", "presence.update"))
    assert len((await bob.get("/city/me/notifications")).json()) == 1


@pytest.mark.parametrize("settings_overrides", [{"city_notify_rate": 2}])
async def test_notifications_from_one_sender_are_rate_limited(api: Api) -> None:
    alice, bob, carol = [await api.guest(n) for n in ("Alice", "Bob", "Carol")]
    await bob.get("/city/me")
    sent = [await alice.say("general", f"<@{bob.user_id}> {i}") for i in range(4)]
    last = await carol.say("general", f"<@{bob.user_id}> from carol")

    async def listed() -> list[str]:
        return [n["message"]["id"] for n in (await bob.get("/city/me/notifications")).json()]

    async def carols_arrived() -> bool:
        return last["id"] in await listed()

    await eventually(carols_arrived, 5, "Carol's mention notifies Bob")
    await asyncio.sleep(0.3)  # Alice's were made before Carol's: any more would be here
    assert await listed() == [last["id"], sent[1]["id"], sent[0]["id"]]


async def test_a_second_devices_marker_reaches_the_first(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    await bob.post("/city/rooms/science/join")
    async with bob.presence() as phone, bob.presence() as laptop:
        for ws in (phone, laptop):
            await ws.expect("unread.bulk")
        sent = [await alice.say("science", f"m{i}") for i in range(3)]
        # New messages push the counts (the last push of the burst has the final ones).
        for ws in (phone, laptop):
            while (await ws.expect("unread.update", room_id="room_city_science"))[
                "unread_count"
            ] != 3:
                pass
        await read(bob, "science", sent[1]["seq"])
        update = await phone.expect("unread.update", room_id="room_city_science")
        assert (update["last_read_seq"], update["unread_count"]) == (sent[1]["seq"], 1)


async def test_me_tells_who_the_caller_is(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms", {"slug": "alices", "name": "Alice's"})
    assert r.status_code == 201, r.text
    me = (await alice.get("/city/me")).json()
    assert me == {
        "user_id": alice.user_id,
        "name": "Alice",
        "admin": False,
        "suspended": False,
        "moderates": [],
        "owns": ["room_city_alices"],
    }
    assert (await api.http.get("/city/me")).status_code == 401


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_personal_events_reach_every_instance(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    """Bob's phone is on instance A, his laptop on B: a mention posted on A and a marker moved
    on B reach both; new messages push the counts on both."""
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        alice = await a.guest("Alice")
        bob_on_a = await a.guest("Bob")
        bob_on_b = User(b, bob_on_a.user_id, bob_on_a.name, bob_on_a.token)
        async with bob_on_a.presence() as phone, bob_on_b.presence() as laptop:
            for ws in (phone, laptop):
                await ws.expect("unread.bulk")
            mention = await alice.say("general", f"hi <@{bob_on_a.user_id}>")
            for ws in (phone, laptop):
                note = await ws.expect("notification")
                assert note["message"]["id"] == mention["id"]
                await ws.expect("unread.update", room_id="room_city_general")
            await read(bob_on_b, "general", mention["seq"])
            for ws in (phone, laptop):
                update = await ws.expect(
                    "unread.update", room_id="room_city_general", last_read_seq=mention["seq"]
                )
                assert (update["unread_count"], update["mention_count"]) == (0, 0)
            await alice.say("general", "one more")
            for ws in (phone, laptop):
                await ws.expect("unread.update", room_id="room_city_general", unread_count=1)
