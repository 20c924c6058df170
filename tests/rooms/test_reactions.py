"""Reaction changes committed together (rooms/reactions.py): consecutive changes in a room's
queue share one transaction, and each still reads as if it had committed alone: its own seq,
its own frame with the reactions right after it, its own answer or error. SQLite and
PostgreSQL, real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from daarion_city.core.errors import Conflict, NotFound
from daarion_city.rooms.changes import ChangeResult
from daarion_city.rooms.reactions import Reaction, commit_reactions
from tests.rooms.test_snapshots import cluster
from tests.support import Api, relation_scans

SCIENCE = "/city/rooms/science"
ROOM_ID = "room_city_science"


def listed(*pairs: tuple[str, list[str]]) -> list[dict[str, object]]:
    return [{"emoji": e, "count": len(users), "users": users} for e, users in pairs]


async def test_a_group_of_changes_reads_as_if_each_had_committed_alone(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    one = (await alice.say("science", "one"))["seq"]
    two = (await alice.say("science", "two"))["seq"]
    gone = (await alice.say("science", "gone"))["seq"]
    assert (
        await alice.api.http.delete(f"{SCIENCE}/messages/{gone}", headers=alice.headers)
    ).is_success
    r = await alice.api.http.put(
        f"{SCIENCE}/messages/{one}/reactions/{quote('👍')}", headers=alice.headers
    )
    assert r.json()["reactions"] == listed(("👍", [alice.user_id]))
    before = gone + 2  # the deletion and the reaction took a seq each
    a, b, c = alice.user_id, bob.user_id, "u_carol"
    changes = [
        Reaction(b, one, "👍", True),
        Reaction(a, one, "👍", False),  # a stored reaction taken away...
        Reaction(a, one, "👍", True),  # ...and made again: it now comes after Bob's
        Reaction(b, one, "👍", True),  # the same again: no seq
        Reaction(c, two, "🎉", True),
        Reaction(c, gone, "🎉", True),  # a deleted message
        Reaction(c, 99_999, "🎉", True),  # no such message
        Reaction(c, two, "❤️", False),  # not there: no seq
        Reaction(b, two, "🎉", True),
    ]
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        outcomes = await commit_reactions(api.server.resources.db, ROOM_ID, changes)
    assert isinstance(outcomes[5], Conflict)
    assert outcomes[5].code == "message_deleted"
    assert isinstance(outcomes[6], NotFound)
    assert outcomes[6].code == "message_not_found"
    results = [o for o in outcomes if isinstance(o, ChangeResult)]
    assert len(results) == 7
    answers = [o.answer["reactions"] if isinstance(o, ChangeResult) else None for o in outcomes]
    assert answers == [
        listed(("👍", [a, b])),
        listed(("👍", [b])),
        listed(("👍", [b, a])),
        listed(("👍", [b, a])),
        listed(("🎉", [c])),
        None,
        None,
        listed(("🎉", [c])),
        listed(("🎉", [c, b])),
    ]
    seqs = [o.frame[0] if isinstance(o, ChangeResult) and o.frame else None for o in outcomes]
    b1, b2, b3, b4, b5 = (before + i for i in range(1, 6))
    assert seqs == [b1, b2, b3, None, b4, None, None, None, b5]
    # Stored as the last change left them; the timeline reads the events back in order.
    page = {m["seq"]: m for m in (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]}
    assert page[one]["reactions"] == listed(("👍", [b, a]))
    assert page[two]["reactions"] == listed(("🎉", [c, b]))
    events = (await api.http.get(f"{SCIENCE}/events", params={"after_seq": before})).json()
    assert [(e["seq"], e["target_seq"], e["user_id"], e["op"]) for e in events["events"]] == [
        (b1, one, b, "add"),
        (b2, one, a, "remove"),
        (b3, one, a, "add"),
        (b4, two, c, "add"),
        (b5, two, b, "add"),
    ]
    # The reaction rows agree with what was written: the next change starts from them.
    r = await bob.api.http.delete(
        f"{SCIENCE}/messages/{one}/reactions/{quote('👍')}", headers=bob.headers
    )
    assert r.json()["reactions"] == listed(("👍", [a]))


@pytest.mark.parametrize(
    "settings_overrides", [{"city_message_rate": 1000, "city_message_burst": 1000}]
)
async def test_many_people_reacting_at_once_each_count_once_in_order(api: Api) -> None:
    users = [await api.guest(f"U{i}") for i in range(30)]
    seq = (await users[0].say("science", "vote"))["seq"]
    path = f"{SCIENCE}/messages/{seq}/reactions/{quote('👍')}"
    async with users[0].socket("science") as ws:
        state = await ws.expect("room.state")
        answers = await asyncio.gather(*(u.api.http.put(path, headers=u.headers) for u in users))
        assert {r.status_code for r in answers} == {200}
        frames = [await ws.expect("room.reaction") for _ in users]
    # One seq each, in order, and each frame counts one more than the one before.
    assert [f["seq"] for f in frames] == list(range(state["last_seq"] + 1, state["last_seq"] + 31))
    assert [f["reactions"][0]["count"] for f in frames] == list(range(1, 31))
    assert {f["user_id"] for f in frames} == {u.user_id for u in users}
    # Each answer shows the reactions right after its own change, as its frame does.
    by_user = {f["user_id"]: f["reactions"] for f in frames}
    for response, user in zip(answers, users, strict=True):
        assert response.json()["reactions"] == by_user[user.user_id]
    page = (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]
    final = next(m for m in page if m["seq"] == seq)["reactions"]
    assert final[0]["count"] == 30
    assert final[0]["users"] == [f["user_id"] for f in frames][:20]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_room_that_grew_since_the_last_analyze_is_read_by_seq(
    api: Api, backend: str
) -> None:
    """The messages and reaction rows a group of changes needs are looked up by room and seq,
    even in a room the statistics do not know yet: not all of its rows read and filtered."""
    olga = await api.guest("Olga")
    room_id = (await olga.post("/city/rooms", {"slug": "agora", "name": "Agora"})).json()["id"]
    db = api.server.resources.db
    async with db.begin() as conn:
        await conn.exec_driver_sql("ANALYZE city_room_messages")
        await conn.exec_driver_sql("ANALYZE city_message_reactions")
        for table, sql in (
            (
                "city_room_messages",
                "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                " body, created_at) SELECT 'mg' || g, $1, g, 'u_x', 'X', 'b', now()"
                " FROM generate_series(1, 20000) g",
            ),
            (
                "city_message_reactions",
                "INSERT INTO city_message_reactions (room_id, seq, emoji, user_id, created_at)"
                " SELECT $1, g, '👍', 'u_' || (g % 7), now() FROM generate_series(1, 20000) g",
            ),
        ):
            await conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            await conn.exec_driver_sql(sql, (room_id,))
        await conn.exec_driver_sql(
            "UPDATE city_rooms SET last_seq = 20000 WHERE id = $1", (room_id,)
        )
    from sqlalchemy import event

    from daarion_city.storage import reactions as reactions_store
    from daarion_city.storage import timeline as store

    seen: list[tuple[str, Any]] = []
    wanted = list(range(19_950, 20_001))
    async with db.begin() as conn:
        event.listen(
            conn.sync_connection,
            "before_cursor_execute",
            lambda _c, _cur, sql, params, *_: seen.append((sql, params)),
        )
        assert len(await store.messages_at(conn, room_id, wanted)) == 51
        assert len(await reactions_store.reaction_entries(conn, room_id, wanted)) == 51
        group = await reactions_store.read_group(conn, room_id, wanted)
        assert group is not None
        assert sum(len(e) for e in group.entries.values()) == 51
        recorded = list(seen)
        plans = [
            (await conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)).scalar()
            for sql, params in recorded
        ]
    tables = [["city_room_messages"], ["city_message_reactions"]]
    tables.append(["city_room_messages", "city_message_reactions"])
    for plan, scanned in zip(plans, tables, strict=True):
        for table in scanned:
            (scan,) = relation_scans(plan[0]["Plan"], table)
            read = scan["Actual Rows"] * scan["Actual Loops"]
            assert read + scan.get("Rows Removed by Filter", 0) <= len(wanted), scan


async def test_a_group_commits_in_one_go_and_the_rows_stay_true(api: Api) -> None:
    """A group with no reaction taken away and made again (on PostgreSQL: read, then one
    conditional write, without a lock): the answers, the stored reactions and the rows the
    next change starts from agree."""
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    one = (await alice.say("science", "one"))["seq"]
    two = (await alice.say("science", "two"))["seq"]
    for user in (alice, bob):
        r = await user.api.http.put(
            f"{SCIENCE}/messages/{one}/reactions/{quote('👍')}", headers=user.headers
        )
        assert r.status_code == 200
    a, b, c = alice.user_id, bob.user_id, "u_carol"
    outcomes = await commit_reactions(
        api.server.resources.db,
        ROOM_ID,
        [
            Reaction(c, one, "🎉", True),
            Reaction(a, one, "👍", False),
            Reaction(c, two, "👍", True),
            Reaction(c, one, "👍", True),
        ],
    )
    answers = [o.answer["reactions"] for o in outcomes if isinstance(o, ChangeResult)]
    assert answers == [
        listed(("👍", [a, b]), ("🎉", [c])),
        listed(("👍", [b]), ("🎉", [c])),
        listed(("👍", [c])),
        listed(("👍", [b, c]), ("🎉", [c])),
    ]
    page = {m["seq"]: m for m in (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]}
    assert (page[one]["reactions"], page[two]["reactions"]) == (answers[3], answers[2])
    r = await bob.api.http.delete(
        f"{SCIENCE}/messages/{one}/reactions/{quote('👍')}", headers=bob.headers
    )
    assert r.json()["reactions"] == listed(("🎉", [c]), ("👍", [c]))  # by first reaction
    events = (await api.http.get(f"{SCIENCE}/events", params={"after_seq": two})).json()
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(two + 1, two + 1 + len(seqs)))


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_write_after_the_room_moved_writes_nothing(api: Api, backend: str) -> None:
    """The conditional write of a group: when the room's timeline moved after the group was
    read (a post or a change of another instance), nothing of it is written."""
    from daarion_city.core.clock import utcnow
    from daarion_city.storage import reactions as reactions_store

    alice = await api.guest("Alice")
    message = await alice.say("science", "one")
    db = api.server.resources.db
    async with db.autocommit() as conn:
        read = await reactions_store.read_group(conn, ROOM_ID, [message["seq"]])
    assert read is not None
    assert read.messages == {message["seq"]: (message["id"], False)}
    await alice.say("science", "meanwhile")
    async with db.autocommit() as conn:
        first = await reactions_store.write_group(
            conn,
            ROOM_ID,
            last_seq=read.last_seq,
            gone=[],
            added=[(message["seq"], "👍", alice.user_id)],
            listed={message["id"]: listed(("👍", [alice.user_id]))},
            events=[(message["seq"], alice.user_id, "👍", "add")],
            at=utcnow(),
        )
    assert first is None
    page = (await api.http.get(f"{SCIENCE}/messages")).json()["messages"]
    assert [m["reactions"] for m in page[-2:]] == [[], []]
    events = (await api.http.get(f"{SCIENCE}/events", params={"after_seq": read.last_seq})).json()
    assert [e["event"] for e in events["events"]] == ["room.message"]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_instances_reacting_at_once_count_every_reaction_once(
    database_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    async with cluster(database_url, tmp_path, redis_prefix) as (a, b):
        author = await a.guest("Author")
        message = await author.say("science", "vote here")
        users = [await api.guest(f"U{i}") for i in range(20) for api in (a, b)]
        path = f"{SCIENCE}/messages/{message['seq']}/reactions/{quote('👍')}"
        answers = await asyncio.gather(*(u.api.http.put(path, headers=u.headers) for u in users))
        assert {r.status_code for r in answers} == {200}
        for api in (a, b):
            events = (
                await api.http.get(f"{SCIENCE}/events", params={"after_seq": message["seq"]})
            ).json()["events"]
            assert [e["seq"] for e in events] == list(
                range(message["seq"] + 1, message["seq"] + 41)
            )
            assert {e["user_id"] for e in events} == {u.user_id for u in users}
            assert [e["reactions"][0]["count"] for e in events] == [40] * 40
        counts = sorted(r.json()["reactions"][0]["count"] for r in answers)
        assert counts == list(range(1, 41))
