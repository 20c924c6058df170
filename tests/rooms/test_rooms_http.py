"""Rooms over HTTP, on SQLite and on PostgreSQL, through a real server socket."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import pytest

from tests.support import Api, relation_scans

SEED = json.loads(resources.files("daarion_city.storage").joinpath("seed_data.json").read_text())


async def test_seed_rooms_are_listed_with_defaults_first(api: Api) -> None:
    r = await api.http.get("/city/rooms")
    assert r.status_code == 200
    rooms = r.json()
    assert [room["slug"] for room in rooms] == [
        "general",
        "welcome",
        "builders",
        "science",
        "energy",
    ]
    by_slug = {room["slug"]: room for room in rooms}
    for seed in SEED["rooms"]:
        room = by_slug[seed["slug"]]
        assert room["id"] == seed["id"]
        assert room["name"] == seed["name"]
        assert room["description"] == seed["description"]
        assert room["is_default"] is seed["is_default"]
        assert room["created_at"].endswith("Z")
    assert by_slug["energy"]["name"] == "Energy Union"
    welcome = by_slug["welcome"]["last_message"]
    assert welcome["author_agent_id"] == "ag_system"
    assert welcome["author_user_id"] is None
    assert welcome["body"].startswith("Вітаємо в DAARION City!")
    assert by_slug["science"]["last_message"] is None


async def test_room_detail_by_id_and_slug(api: Api) -> None:
    by_slug = (await api.http.get("/city/rooms/general")).json()
    by_id = (await api.http.get("/city/rooms/room_city_general")).json()
    assert by_slug["id"] == by_id["id"] == "room_city_general"
    assert [m["id"] for m in by_slug["messages"]] == ["m_city_general_001"]
    assert by_slug["online_members"] == []
    r = await api.http.get("/city/rooms/nowhere")
    assert r.status_code == 404
    assert r.json()["code"] == "room_not_found"


async def test_list_pagination(api: Api) -> None:
    first = (await api.http.get("/city/rooms", params={"limit": 2})).json()
    rest = (await api.http.get("/city/rooms", params={"limit": 10, "offset": 2})).json()
    assert [r["slug"] for r in first + rest] == [
        "general",
        "welcome",
        "builders",
        "science",
        "energy",
    ]
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "x"}):
        assert (await api.http.get("/city/rooms", params=bad)).status_code == 422


async def test_create_room(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms", {"slug": "garden", "name": "Garden", "description": "Сад"})
    assert r.status_code == 201, r.text
    room = r.json()
    assert room["id"] == "room_city_garden"
    assert room["created_by"] == alice.user_id
    assert room["is_default"] is False
    assert room["messages"] == []
    again = await alice.post("/city/rooms", {"slug": "garden", "name": "Other"})
    assert again.status_code == 409
    assert again.json()["code"] == "room_exists"
    listed = [x["slug"] for x in (await api.http.get("/city/rooms")).json()]
    # Default rooms first, then the newest.
    assert listed[:4] == ["general", "welcome", "builders", "garden"]


async def test_create_room_race_gives_one_room_and_one_feed_event(api: Api) -> None:
    users = [await api.guest(f"U{i}") for i in range(8)]
    answers = await asyncio.gather(
        *(u.post("/city/rooms", {"slug": "contested", "name": "Contested"}) for u in users)
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"room_exists"}
    feed = (await api.http.get("/city/feed", params={"kind": "room_created", "limit": 100})).json()
    assert [e["payload"]["slug"] for e in feed].count("contested") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "A", "name": "x"},
        {"slug": "-abc", "name": "x"},
        {"slug": "a", "name": "x"},
        {"slug": "a" * 65, "name": "x"},
        {"slug": "ok-slug", "name": ""},
        {"slug": "ok-slug", "name": "   "},
        {"slug": "ok-slug", "name": "x" * 101},
        {"slug": "ok-slug", "name": "x", "description": "d" * 501},
        {"slug": "ok-slug"},
        {"slug": "ok-slug", "name": "x", "user_id": "u_evil"},
        {"slug": "ok-slug", "name": "nul\u0000"},
        {"slug": "ok-slug\n", "name": "x"},
        {"slug": "ok-slug", "name": "\u200b\u200d\ufeff"},
        {"slug": "ok-slug", "name": "two\nlines"},
        {"slug": "ok-slug", "name": "\u202eright to left"},
    ],
)
async def test_create_room_rejects_bad_input(api: Api, body: dict[str, str]) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms", body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert (await api.http.get("/city/rooms/ok-slug")).status_code == 404


async def test_protected_routes_need_a_valid_token(api: Api) -> None:
    alice = api.user("u_alice", "Alice")
    forged = alice.token[:-4] + ("AAAA" if not alice.token.endswith("AAAA") else "BBBB")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {forged}"}):
        for method, path, body in (
            ("POST", "/city/rooms", {"slug": "x1", "name": "x"}),
            ("POST", "/city/rooms/general/messages", {"body": "hi"}),
            ("POST", "/city/rooms/general/join", None),
            ("POST", "/city/rooms/general/leave", None),
        ):
            r = await api.http.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["code"] == "unauthorized"
    expired = api.server.resources.auth.mint("u_alice", "Alice", -10).token
    r = await api.http.post(
        "/city/rooms/general/messages",
        json={"body": "hi"},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert r.status_code == 401


async def test_post_message_and_read_history(api: Api) -> None:
    alice = await api.guest("Alice")
    m = await alice.say("science", "перше повідомлення")
    assert m["seq"] == 1
    assert m["room_id"] == "room_city_science"
    assert m["author_user_id"] == alice.user_id
    assert m["author_agent_id"] is None
    assert m["username"] == "Alice"
    assert m["created_at"].endswith("Z")
    for i in range(2, 8):
        assert (await alice.say("room_city_science", f"m{i}"))["seq"] == i
    page = (await api.http.get("/city/rooms/science/messages", params={"limit": 3})).json()
    assert [x["seq"] for x in page["messages"]] == [5, 6, 7]
    assert page["has_more"] is True
    older = await api.http.get("/city/rooms/science/messages", params={"before_seq": 5, "limit": 3})
    assert [x["seq"] for x in older.json()["messages"]] == [2, 3, 4]
    oldest = await api.http.get("/city/rooms/science/messages", params={"before_seq": 2})
    assert [x["seq"] for x in oldest.json()["messages"]] == [1]
    assert oldest.json()["has_more"] is False
    newer = await api.http.get("/city/rooms/science/messages", params={"after_seq": 5})
    assert [x["seq"] for x in newer.json()["messages"]] == [6, 7]
    assert newer.json()["has_more"] is False
    room = (await api.http.get("/city/rooms/science")).json()
    assert room["last_message"]["seq"] == 7
    assert [x["seq"] for x in room["messages"]] == list(range(1, 8))


async def test_message_identity_comes_from_the_token(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await alice.post(
        "/city/rooms/general/messages", {"body": "hi", "author_user_id": "u_mallory"}
    )
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"body": ""}, 422),
        ({"body": "   \n\t "}, 422),
        ({"body": "x" * 10_001}, 422),
        ({}, 422),
        ({"body": 5}, 422),
        ({"body": "ok", "client_msg_id": "c" * 65}, 422),
        ({"body": "x" * 70_000}, 413),
        ({"body": "nul \u0000 inside"}, 422),
        ({"body": "\u200b\u200d\ufeff"}, 422),
        ({"body": "\u3164 \u2800"}, 422),
    ],
)
async def test_bad_messages_are_refused_and_nothing_is_stored(
    api: Api, body: dict[str, object], status: int
) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms/science/messages", body)
    assert r.status_code == status, r.text
    assert r.json()["code"] in ("validation_error", "payload_too_large")
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert page["messages"] == []
    feed = (await api.http.get("/city/feed", params={"kind": "room_message"})).json()
    assert feed == []


async def test_message_limits_accept_the_maximum(api: Api) -> None:
    alice = await api.guest("Alice")
    m = await alice.say("science", "я" * 10_000, client_msg_id="c" * 64)
    assert len(m["body"]) == 10_000


async def test_post_to_unknown_room(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms/nowhere/messages", {"body": "hi"})
    assert r.status_code == 404
    assert r.json() == {"detail": "no room 'nowhere'", "code": "room_not_found"}


async def test_repeated_client_msg_id_stores_one_message(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    first = await alice.say("science", "once", client_msg_id="c-1")
    again = await alice.post(
        "/city/rooms/science/messages", {"body": "once", "client_msg_id": "c-1"}
    )
    assert again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first
    # Concurrent retries of the same key still store one row.
    retries = await asyncio.gather(
        *(alice.say("science", "twice", client_msg_id="c-2") for _ in range(10))
    )
    assert len({(m["id"], m["seq"]) for m in retries}) == 1
    # The key is per user: Bob's c-1 is a different message.
    bobs = await bob.say("science", "bob's", client_msg_id="c-1")
    assert bobs["id"] != first["id"]
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
    feed = (await api.http.get("/city/feed", params={"kind": "room_message"})).json()
    assert len(feed) == 3
    # Retries sharing a commit with new messages take no seq: no gap, and the next is 9.
    mixed = await asyncio.gather(
        *(alice.say("science", "once", client_msg_id="c-1") for _ in range(5)),
        *(bob.say("science", f"new {i}") for i in range(5)),
    )
    assert sorted(m["seq"] for m in mixed[5:]) == [4, 5, 6, 7, 8]
    assert (await bob.say("science", "next"))["seq"] == 9
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert [m["seq"] for m in page["messages"]] == list(range(1, 10))


async def test_fifty_concurrent_posts_get_gapless_seq(api: Api) -> None:
    users = [await api.guest(f"U{i}") for i in range(5)]
    posts = [users[i % 5].say("energy", f"n{i}") for i in range(50)]
    results = await asyncio.gather(*posts)
    assert sorted(m["seq"] for m in results) == list(range(1, 51))
    page = (await api.http.get("/city/rooms/energy/messages", params={"limit": 200})).json()
    assert [m["seq"] for m in page["messages"]] == list(range(1, 51))
    assert len({m["id"] for m in page["messages"]}) == 50


async def test_join_and_leave_are_persisted_and_idempotent(api: Api) -> None:
    alice = await api.guest("Alice")
    for _ in range(2):
        r = await alice.post("/city/rooms/builders/join")
        assert r.status_code == 200
        assert r.json() == {"status": "joined", "room_id": "room_city_builders"}
    assert (await api.http.get("/city/rooms/builders")).json()["member_count"] == 1
    for _ in range(2):
        r = await alice.post("/city/rooms/room_city_builders/leave")
        assert r.json() == {"status": "left", "room_id": "room_city_builders"}
    assert (await api.http.get("/city/rooms/builders")).json()["member_count"] == 0
    kinds = [e["kind"] for e in (await api.http.get("/city/feed")).json()]
    assert kinds.count("member_joined") == 1
    assert kinds.count("member_left") == 1
    assert (await alice.post("/city/rooms/nowhere/join")).status_code == 404


async def refuse_boom(database_url: str) -> None:
    """A PostgreSQL trigger that refuses every message whose body is ``boom``."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            CREATE FUNCTION refuse_boom() RETURNS trigger AS $$
            BEGIN
              IF NEW.body = 'boom' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse_boom BEFORE INSERT ON city_room_messages
              FOR EACH ROW EXECUTE FUNCTION refuse_boom();
            """
        )
    finally:
        await conn.close()


async def test_a_post_that_fails_in_the_database_does_not_take_its_batch_with_it(
    api: Api, backend: str
) -> None:
    """Posts share commits under load; a post the database refuses must fail alone."""
    if backend != "postgresql":
        pytest.skip("the refusal is a PostgreSQL trigger")
    await refuse_boom(api.server.settings.database_url)
    users = [await api.guest(f"U{i}") for i in range(6)]
    bodies = ["a", "b", "boom", "c", "d", "e"]
    answers = await asyncio.gather(
        *(
            u.post("/city/rooms/science/messages", {"body": b})
            for u, b in zip(users, bodies, strict=True)
        )
    )
    codes = {b: a.status_code for b, a in zip(bodies, answers, strict=True)}
    assert codes.pop("boom") == 500
    assert set(codes.values()) == {201}
    # The failure is answered in the API's error shape, with the request's id, and counted.
    boom = answers[bodies.index("boom")]
    assert boom.json() == {"detail": "internal error", "code": "internal"}
    assert boom.headers.get("x-request-id")
    metrics = (await api.http.get("/metrics")).text
    assert 'city_http_requests_total{method="POST",status="500"} 1.0' in metrics
    page = (await api.http.get("/city/rooms/science/messages")).json()
    assert sorted(m["body"] for m in page["messages"]) == ["a", "b", "c", "d", "e"]
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5]  # still no gap


async def test_posts_to_many_rooms_at_once_share_statements_and_stay_apart(
    api: Api, backend: str
) -> None:
    """Posts to many rooms at once: the rooms' batches share statements (PostgreSQL) or
    transactions (SQLite); the metric counts those that did. Each room still numbers its own
    messages without gap, and when posts to many rooms meet a retry in one room (it replays its
    original) and a message the database refuses in another (it fails alone), no other room's
    posts are touched."""
    rooms = [f"many{k}" for k in range(8)]
    owner = await api.guest("Owner")
    for slug in rooms:
        r = await owner.post("/city/rooms", {"slug": slug, "name": slug})
        assert r.status_code == 201, r.text
    first = await owner.say("many0", "first", client_msg_id="again")
    users = [await api.guest(f"P{i}") for i in range(6)]

    async def burst(extra: list[tuple[Any, str, dict[str, Any]]]) -> None:
        sends = [(u, room, {"body": f"{room} {u.user_id}"}) for room in rooms for u in users]
        sends += extra
        answers = await asyncio.gather(
            *(u.post(f"/city/rooms/{room}/messages", body) for u, room, body in sends)
        )
        for (_, room, body), answer in zip(sends, answers, strict=True):
            if body["body"] == "boom":
                assert answer.status_code == 500
            elif body.get("client_msg_id") == "again":
                assert answer.status_code == 201
                assert answer.headers["idempotent-replayed"] == "true"
                assert answer.json()["id"] == first["id"]
            else:
                assert answer.status_code == 201, (room, answer.text)

    await burst([])
    metrics = (await api.http.get("/metrics")).text
    shared = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('city_message_commit_rooms_total{shared="several"}')
    ]
    assert shared, metrics
    assert shared[0] > 0, metrics
    if backend == "postgresql":
        await refuse_boom(api.server.settings.database_url)
        await burst(
            [
                (owner, "many0", {"body": "first", "client_msg_id": "again"}),
                (owner, "many3", {"body": "boom"}),
            ]
        )
    else:
        await burst([(owner, "many0", {"body": "first", "client_msg_id": "again"})])
    for room in rooms:
        page = (await api.http.get(f"/city/rooms/{room}/messages", params={"limit": 50})).json()
        expected = 2 * len(users) + (1 if room == "many0" else 0)
        assert [m["seq"] for m in page["messages"]] == list(range(1, expected + 1)), room
        assert all(m["body"] != "boom" for m in page["messages"])
    feed = (await api.http.get("/city/feed", params={"kind": "room_message", "limit": 100})).json()
    assert len(feed) == 2 * len(rooms) * len(users) + 1


async def test_a_retry_is_looked_up_by_index_in_any_plan(database_url: str, backend: str) -> None:
    """Retries are found with one probe of the idempotency index per key, even in a generic
    plan PostgreSQL cached while the room was small. (The lookup used to be one
    ``(author, client_msg_id) IN (...)``, whose cached plan read every message of the room:
    0.6 s per commit at 560,000 messages.)"""
    if backend != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    from sqlalchemy import event

    from daarion_city.storage import messages as store
    from daarion_city.storage.database import Database

    db = Database(database_url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with db.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                " body, client_msg_id, created_at) SELECT 'mb' || g, 'room_city_science', g,"
                " 'u_' || (g % 50), 'U', 'b', 'c' || g, now() FROM generate_series(1, 20000) g"
            )
        keys = [("u_1", "c1"), ("u_2", "c2"), ("u_3", "nowhere")]
        seen: list[tuple[str, Any]] = []
        async with db.read() as conn:
            event.listen(
                conn.sync_connection,
                "before_cursor_execute",
                lambda _c, _cur, sql, params, *_: seen.append((sql, params)),
            )
            found = await store.find_by_client_msg_ids(conn, "room_city_science", keys)
            assert sorted(found) == [("u_1", "c1"), ("u_2", "c2")]
            (sql, params), *_ = seen
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            plan = (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar()
    finally:
        await db.dispose()

    found_scans = relation_scans(plan[0]["Plan"], "city_room_messages")
    assert len(found_scans) == len(keys)
    for scan in found_scans:
        assert scan["Node Type"] == "Index Scan", scan
        assert "client_msg_id" in scan["Index Cond"], scan
        assert "Filter" not in scan, scan


@pytest.mark.parametrize("settings_overrides", [{"city_default_rooms": ""}])
async def test_a_city_without_default_rooms_lists_its_rooms(api: Api) -> None:
    """``CITY_DEFAULT_ROOMS=""``: no room ranks first, the newest lead (the list's ordering
    once failed to build without a default room)."""
    alice = await api.guest("Alice")
    for slug in ("first", "second"):
        r = await alice.post("/city/rooms", {"slug": slug, "name": slug.title()})
        assert r.status_code == 201, r.text
    r = await api.http.get("/city/rooms")
    assert r.status_code == 200, r.text
    assert [room["slug"] for room in r.json()][:2] == ["second", "first"]


async def test_a_message_is_found_by_its_seq_in_any_plan(database_url: str, backend: str) -> None:
    """An edit, a deletion or a reaction reads and writes its message by room and seq through
    the ``(room_id, seq)`` index, even in a generic plan cached while the room was small. (The
    idempotency index, whose first column is ``room_id`` too, was once picked for them: about
    7,600 rows walked per call, bench/unread.py; it is partial since migration 0006.)"""
    if backend != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    from sqlalchemy import event

    from daarion_city.storage import timeline as store
    from daarion_city.storage.database import Database

    db = Database(database_url.replace("postgresql://", "postgresql+asyncpg://"))
    seen: list[tuple[str, Any]] = []
    try:
        async with db.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO city_room_messages (id, room_id, seq, author_user_id, username,"
                " body, client_msg_id, created_at) SELECT 'mb' || g, 'room_city_science', g,"
                " 'u_' || (g % 50), 'U', 'b', 'c' || g, now() FROM generate_series(1, 20000) g"
            )
        async with db.begin() as conn:
            event.listen(
                conn.sync_connection,
                "before_cursor_execute",
                lambda _c, _cur, sql, params, *_: seen.append((sql, params)),
            )
            assert (await store.lock_message(conn, "room_city_science", 777)) is not None
            await store.update_message(conn, "room_city_science", 777, body="edited")
            recorded = [(sql, params) for sql, params in seen if "city_room_messages" in sql]
            # The only other index led by room_id serves only statements naming a client_msg_id.
            definition = (
                await conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes"
                    " WHERE indexname = 'uq_room_messages_idempotency'"
                )
            ).scalar_one()
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            plans = [
                (await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params)).scalar()
                for sql, params in recorded
            ]
    finally:
        await db.dispose()

    assert definition.endswith("WHERE (client_msg_id IS NOT NULL)"), definition
    assert len(plans) == 2
    for plan in plans:
        nodes = relation_scans(plan[0]["Plan"], "city_room_messages")
        (scan,) = [n for n in nodes if "Scan" in n["Node Type"]]  # the UPDATE's node aside
        assert scan["Index Name"] == "uq_room_messages_room_seq", scan
