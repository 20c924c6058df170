"""The room timeline (SPEC section 9 and 12): edits, deletions and reactions take the room's
next seq, reach every socket in order, and come back to a client that resumes; a change that
changes nothing takes no seq and sends nothing. SQLite and PostgreSQL, real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.rooms.test_snapshots import cluster
from tests.support import Api, User, eventually

SCIENCE = "/city/rooms/science"
TIMELINE = ("room.message", "room.message.edit", "room.message.delete", "room.reaction")


def at(seq: int) -> str:
    return f"{SCIENCE}/messages/{seq}"


async def patch(user: User, seq: int, body: str) -> Any:
    return await user.api.http.patch(at(seq), json={"body": body}, headers=user.headers)


async def delete(user: User, seq: int) -> Any:
    return await user.api.http.delete(at(seq), headers=user.headers)


async def react(user: User, seq: int, emoji: str, *, add: bool = True) -> Any:
    method = user.api.http.put if add else user.api.http.delete
    return await method(f"{at(seq)}/reactions/{quote(emoji, safe='')}", headers=user.headers)


async def last_seq(api: Api) -> int:
    events = (await api.http.get(f"{SCIENCE}/events", params={"after_seq": 0})).json()
    return max((e.get("seq") or e["message"]["seq"] for e in events["events"]), default=0)


async def test_an_edit_replaces_the_message_for_everyone(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    original = await alice.say("science", "helo <@u_x>")
    async with bob.socket("science") as ws:
        await ws.expect("room.state")
        r = await patch(alice, original["seq"], "hello <@u_y>")
        assert r.status_code == 200, r.text
        edited = r.json()
        assert (edited["id"], edited["seq"], edited["body"]) == (
            original["id"],
            original["seq"],
            "hello <@u_y>",
        )
        assert edited["mentions"] == ["u_y"]
        assert edited["edited_at"] is not None
        frame = await ws.expect("room.message.edit")
        assert frame["seq"] == original["seq"] + 1
        assert frame["message"] == edited
        # The same body again: answered, no seq, nothing sent.
        again = await patch(alice, original["seq"], "hello <@u_y>")
        assert again.status_code == 200
        assert again.json() == edited
        await ws.silent(0.3)
    assert (await patch(bob, original["seq"], "mine now")).json()["code"] == "forbidden"
    assert (await patch(alice, 999, "x")).json()["code"] == "message_not_found"
    page = (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]
    assert page[-1] == edited  # pages list messages as they are now, at their creation seq


async def test_a_deletion_leaves_a_tombstone(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    message = await alice.say("science", "oops <@u_x>")
    assert (await react(bob, message["seq"], "👍")).status_code == 200
    assert (await delete(bob, message["seq"])).json()["code"] == "forbidden"
    async with bob.socket("science") as ws:
        await ws.expect("room.state")
        r = await delete(alice, message["seq"])
        assert r.status_code == 200, r.text
        tomb = r.json()
        assert (tomb["id"], tomb["seq"], tomb["author_user_id"]) == (
            message["id"],
            message["seq"],
            alice.user_id,
        )
        assert (tomb["body"], tomb["mentions"], tomb["reactions"]) == ("", [], [])
        assert (tomb["deleted"], tomb["deleted_by"]) == (True, "author")
        frame = await ws.expect("room.message.delete")
        assert frame["message"] == tomb
        again = await delete(alice, message["seq"])
        assert (again.status_code, again.json()) == (200, tomb)
        await ws.silent(0.3)
    assert (await patch(alice, message["seq"], "back")).json()["code"] == "message_deleted"
    assert (await react(bob, message["seq"], "🎉")).json()["code"] == "message_deleted"


async def test_reactions_count_each_user_once_per_emoji(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    message = await alice.say("science", "ship it")
    seq = message["seq"]
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        first = await react(alice, seq, "❤")  # text presentation: stored as the emoji "❤️"
        assert first.status_code == 200, first.text
        assert first.json() == {
            "room_id": message["room_id"],
            "seq": seq,
            "reactions": [{"emoji": "❤️", "count": 1, "users": [alice.user_id]}],
        }
        frame = await ws.expect("room.reaction")
        assert (frame["target_seq"], frame["user_id"], frame["emoji"], frame["op"]) == (
            seq,
            alice.user_id,
            "❤️",
            "add",
        )
        assert frame["seq"] == seq + 1
        assert (await react(alice, seq, "❤️")).json() == first.json()  # the same, no seq
        await ws.silent(0.3)
        both = (await react(bob, seq, "❤️")).json()["reactions"]
        assert both == [{"emoji": "❤️", "count": 2, "users": [alice.user_id, bob.user_id]}]
        assert (await react(bob, seq, ":tada:")).status_code == 200
        gone = (await react(alice, seq, "❤️", add=False)).json()["reactions"]
        assert gone == [
            {"emoji": "❤️", "count": 1, "users": [bob.user_id]},
            {"emoji": ":tada:", "count": 1, "users": [bob.user_id]},
        ]
        assert (await react(alice, seq, "❤️", add=False)).json()["reactions"] == gone
        seqs = [(await ws.expect("room.reaction"))["seq"] for _ in range(3)]
        assert seqs == [seq + 2, seq + 3, seq + 4]
    page = (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]
    assert page[-1]["reactions"] == gone
    for bad in ("ab", "👍👍", ":Caps:", "x" * 40, "1"):
        r = await react(alice, seq, bad)
        assert r.status_code == 422, bad
        assert r.json()["code"] in ("invalid_emoji", "validation_error"), bad


@pytest.mark.parametrize(
    "settings_overrides", [{"city_message_rate": 1000, "city_message_burst": 1000}]
)
async def test_at_most_20_emoji_per_message(api: Api) -> None:
    alice = await api.guest("Alice")
    seq = (await alice.say("science", "vote"))["seq"]
    for i in range(20):
        assert (await react(alice, seq, f":e{i}:")).status_code == 200
    r = await react(alice, seq, ":one_more:")
    assert (r.status_code, r.json()["code"]) == (422, "too_many_reactions")
    assert (await react(alice, seq, ":e3:")).status_code == 200  # an emoji already there


async def test_a_resumed_socket_gets_the_edit_deletion_and_reaction_it_missed(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    one = await alice.say("science", "one")
    two = await alice.say("science", "two")
    async with bob.socket("science") as ws:
        state = await ws.expect("room.state")
    since = state["last_seq"]
    assert (await patch(alice, one["seq"], "one, edited")).status_code == 200
    assert (await delete(alice, two["seq"])).status_code == 200
    assert (await react(bob, one["seq"], "🎉")).status_code == 200
    async with bob.socket("science", since_seq=since) as ws:
        await ws.expect("room.state")
        got = [await ws.recv() for _ in range(3)]
        await ws.silent(0.3, ignore=("presence.update", "room.join"))
    assert [(f["event"], f["seq"]) for f in got] == [
        ("room.message.edit", since + 1),
        ("room.message.delete", since + 2),
        ("room.reaction", since + 3),
    ]
    # Each carries its message as it is now: the edit's message has the reaction too.
    assert got[0]["message"]["body"] == "one, edited"
    assert got[0]["message"]["reactions"][0]["emoji"] == "🎉"
    assert got[1]["message"]["deleted"] is True
    # Over HTTP, the same events, and the timeline is contiguous from the room's start.
    events = (await api.http.get(f"{SCIENCE}/events", params={"after_seq": since})).json()
    assert events == {"events": got, "has_more": False}
    everything = (await api.http.get(f"{SCIENCE}/events", params={"limit": 500})).json()
    seqs = [e.get("seq") or e["message"]["seq"] for e in everything["events"]]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize(
    "settings_overrides", [{"city_message_rate": 1000, "city_message_burst": 1000}]
)
async def test_concurrent_posts_edits_and_reactions_keep_the_timeline_contiguous(
    api: Api,
) -> None:
    users = [await api.guest(f"U{i}") for i in range(5)]
    base = [await u.say("science", f"base {i}") for i, u in enumerate(users)]
    async with users[0].socket("science") as ws:
        state = await ws.expect("room.state")

        async def work(i: int) -> None:
            user = users[i % 5]
            target = base[i % 5]
            if i % 3 == 0:
                await user.say("science", f"post {i}")
            elif i % 3 == 1:
                assert (await patch(user, target["seq"], f"edit {i}")).status_code == 200
            else:
                assert (await react(user, base[(i + 1) % 5]["seq"], f":r{i}:")).status_code == 200

        await asyncio.gather(*(work(i) for i in range(50)))
        seen: list[int] = []
        while len(seen) < 50:
            frame = await ws.recv()
            if frame["event"] == "room.message":
                seen.append(frame["message"]["seq"])
            elif frame["event"] in ("room.message.edit", "room.reaction"):
                seen.append(frame["seq"])
    assert seen == list(range(state["last_seq"] + 1, state["last_seq"] + 51))
    events = (await api.http.get(f"{SCIENCE}/events", params={"limit": 500})).json()["events"]
    seqs = [e.get("seq") or e["message"]["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_instances_show_the_same_timeline(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        alice = await a.guest("Alice")
        bob_on_b = await b.guest("Bob")
        message = await alice.say("science", "on a")
        async with bob_on_b.socket("science") as ws_b, alice.socket("science") as ws_a:
            await ws_b.expect("room.state")
            await ws_a.expect("room.state")
            # Alice's socket on A drops the room's reads on B by a notice on the bus; once it
            # has arrived (loopback: well within the pause), B keeps the page it reads now.
            await asyncio.sleep(0.5)
            page = (await b.http.get(f"{SCIENCE}/messages")).json()["messages"]
            assert page[-1]["body"] == "on a"
            assert (await b.http.get("/city/feed")).json()[0]["payload"]["snippet"] == "on a"
            assert (await patch(alice, message["seq"], "edited on a")).status_code == 200
            assert (await react(alice, message["seq"], "🚀")).status_code == 200

            async def b_shows_both() -> bool:
                page = (await b.http.get(f"{SCIENCE}/messages")).json()["messages"]
                feed = (await b.http.get("/city/feed")).json()
                return bool(
                    page[-1]["body"] == "edited on a"
                    and page[-1]["reactions"]
                    and feed[0]["payload"]["snippet"] == "edited on a"
                )

            # Neither an edit nor a reaction is a feed event: B's kept pages (and its feed,
            # whose snippet shows the message as it is) learn of them from the room's notice.
            await eventually(b_shows_both, 2.0, "B's page missed the edit or the reaction")
            assert (await delete(alice, message["seq"])).status_code == 200
            for ws in (ws_a, ws_b):
                got = []
                while len(got) < 3:
                    frame = await ws.recv()
                    if frame["event"] in TIMELINE:
                        got.append((frame["event"], frame["seq"]))
                assert got == [
                    ("room.message.edit", message["seq"] + 1),
                    ("room.reaction", message["seq"] + 2),
                    ("room.message.delete", message["seq"] + 3),
                ]
        for api in (a, b):
            page = (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]
            assert page[-1]["deleted"] is True


async def test_a_deleted_message_leaves_its_text_nowhere_in_the_feed(api: Api) -> None:
    alice = await api.guest("Alice")
    message = await alice.say("science", "the secret plan")

    def event_of(feed: list[dict[str, Any]]) -> dict[str, Any]:
        return next(
            e
            for e in feed
            if e["kind"] == "room_message" and e["payload"]["message_id"] == message["id"]
        )

    feed = (await api.http.get("/city/feed")).json()
    assert event_of(feed)["payload"] == {"message_id": message["id"], "snippet": "the secret plan"}
    assert (await delete(alice, message["seq"])).status_code == 200
    feed = (await api.http.get("/city/feed")).json()
    assert (feed[0]["kind"], feed[0]["payload"]) == (
        "message_deleted",
        {"message_id": message["id"]},
    )
    assert event_of(feed)["payload"] == {"message_id": message["id"]}
    async with api.server.resources.db.read() as conn:
        stored = (await conn.exec_driver_sql("SELECT payload FROM city_feed_events")).all()
    assert not [row for row in stored if "secret" in str(row[0])]
