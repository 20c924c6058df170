"""Message search (SPEC 11, 12) over real HTTP, on SQLite and PostgreSQL: every word, the last as
a prefix, Cyrillic and Latin, newest first, escaped snippets, paging, a room, tombstones and
edits, the limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from daarion_city.core.errors import Unprocessable
from daarion_city.rooms.search import decode_cursor, encode_cursor
from daarion_city.storage.tables import room_messages
from tests.support import Api, Server, User


async def find(api: Api, q: str, **params: Any) -> httpx.Response:
    return await api.http.get("/city/search", params={"q": q, **params})


async def bodies(api: Api, q: str, **params: Any) -> list[str]:
    r = await find(api, q, **params)
    assert r.status_code == 200, r.text
    return [hit["message"]["body"] for hit in r.json()["results"]]


async def test_every_word_the_last_as_a_prefix_any_case_cyrillic_and_latin(api: Api) -> None:
    alice = await api.guest("Alice")
    for body in (
        "Привіт, Світе! Їжак іде додому",
        "Hello World from the builders",
        "hello there",
        "Café à Paris, l'école",
        "see https://example.com/docs/page?id=7 for it",
        "мій друже",
    ):
        await alice.say("general", body)
    assert await bodies(api, "привіт СВІТ") == ["Привіт, Світе! Їжак іде додому"]
    assert await bodies(api, "світ привіт") == []  # "привіт" is not a prefix word: whole only
    assert await bodies(api, "ЇЖАК") == ["Привіт, Світе! Їжак іде додому"]
    assert await bodies(api, "іжак") == []  # ї is not і (Cyrillic letters keep their marks)
    assert await bodies(api, "мій") == ["мій друже"]
    assert await bodies(api, "HELLO") == ["hello there", "Hello World from the builders"]
    assert await bodies(api, "hello wor") == ["Hello World from the builders"]
    assert await bodies(api, "hello world nothing") == []  # every word must match
    assert await bodies(api, "hel") == ["hello there", "Hello World from the builders"]
    assert await bodies(api, "hel there") == []  # only the last word is a prefix
    assert await bodies(api, "cafe ecole") == ["Café à Paris, l'école"]  # diacritics folded
    assert await bodies(api, "CAFÉ pari") == ["Café à Paris, l'école"]
    assert await bodies(api, "example docs") == ["see https://example.com/docs/page?id=7 for it"]
    assert await bodies(api, "a b c hello x") == ["hello there", "Hello World from the builders"]


@pytest.mark.parametrize("q", ["a", "a b", "!!", "  ", "- & |", "é ї 1"])
async def test_no_word_of_two_characters_is_422(api: Api, q: str) -> None:
    r = await find(api, q)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "query_too_short"


async def test_query_operators_are_plain_separators(api: Api) -> None:
    alice = await api.guest("Alice")
    await alice.say("general", "it's alpha & beta | gamma (delta) !omega: back\\slash")
    await alice.say("general", "alpha only")
    for q in (
        "alpha & beta",
        "alpha | beta",
        "!alpha beta",
        "alpha:* beta",
        "(alpha) 'beta'",
        '"alpha" "beta"',
        "alpha\\ beta\\",
        "alpha' & 'beta",
        "alpha'' beta:A",
        "alpha beta*",
    ):
        assert await bodies(api, q) == ["it's alpha & beta | gamma (delta) !omega: back\\slash"], q
    assert await bodies(api, "alpha | nothing") == []  # "|" is no OR
    assert await bodies(api, "alpha NEAR beta") == []  # a word like any other (not FTS5's)
    assert await bodies(api, "body : alpha") == []  # nor a column filter
    assert await bodies(api, "alpha !beta") == [
        "it's alpha & beta | gamma (delta) !omega: back\\slash"
    ]  # "!" is no NOT
    for q in ("'", "\\", '"', ":*", "''; DROP TABLE x; --", "a:*|b", "\x00ab", "ab\\'cd"):
        r = await find(api, q)
        assert r.status_code in (200, 422), (q, r.text)
    assert await bodies(api, "back slash") == [
        "it's alpha & beta | gamma (delta) !omega: back\\slash"
    ]


async def test_snippets_mark_the_matches_in_escaped_text(api: Api) -> None:
    alice = await api.guest("Alice")
    await alice.say("general", "<script>alert('Привіт')</script> & привітання <b>")
    r = await find(api, "ПРИВІТ")
    (hit,) = r.json()["results"]
    assert hit["snippet"] == (
        "&lt;script&gt;alert(&#x27;<mark>Привіт</mark>&#x27;)&lt;/script&gt; &amp; "
        "<mark>привітання</mark> &lt;b&gt;"
    )
    assert hit["message"]["body"] == "<script>alert('Привіт')</script> & привітання <b>"
    long = "filler " * 100 + "needle in the middle " + "filler " * 100
    await alice.say("general", long)
    (hit,) = (await find(api, "needle")).json()["results"]
    snip = hit["snippet"]
    assert snip.startswith("…")
    assert snip.endswith("…")
    assert "<mark>needle</mark> in the middle" in snip
    assert len(snip) < 300


async def test_hits_are_messages_newest_first_paged_by_next(api: Api) -> None:
    alice = await api.guest("Alice")
    sent = [await alice.say("general", f"page number {i}") for i in range(5)]
    await alice.say("builders", "page in builders")
    r = await find(api, "page", limit=2)
    data = r.json()
    assert r.status_code == 200
    assert [hit["message"]["body"] for hit in data["results"]] == [
        "page in builders",
        sent[4]["body"],
    ]
    assert data["results"][1]["message"] == sent[4]
    got: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["before"] = cursor
        data = (await find(api, "page", **params)).json()
        got += [hit["message"]["body"] for hit in data["results"]]
        cursor = data["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert got == ["page in builders"] + [f"page number {i}" for i in reversed(range(5))]
    # One room (by slug or id), paged too.
    general_id = sent[0]["room_id"]
    for room in ("general", general_id):
        inside: list[str] = []
        cursor = None
        while True:
            params = {"room": room, "limit": 3}
            if cursor is not None:
                params["before"] = cursor
            data = (await find(api, "page", **params)).json()
            inside += [hit["message"]["body"] for hit in data["results"]]
            if (cursor := data["next"]) is None:
                break
        assert inside == [f"page number {i}" for i in reversed(range(5))]
    assert await bodies(api, "page", room="builders") == ["page in builders"]
    assert await bodies(api, "page", room="welcome") == []
    r = await find(api, "page", room="nowhere")
    assert (r.status_code, r.json()["code"]) == (404, "room_not_found")
    for bad in ("x", "!!!", "bjpub3BlCg", "bjox" * 60):
        r = await find(api, "page", before=bad)
        assert r.status_code == 422, (bad, r.text)
    for bad_limit in (0, 51):
        assert (await find(api, "page", limit=bad_limit)).status_code == 422


async def test_edits_and_deletions_change_what_is_found(api: Api, server: Server) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    admin = api.user("boss", "Boss")
    edited = await alice.say("general", "original wording here")
    mine = await alice.say("general", "mistaken message")
    moderated = await bob.say("general", "spammy message")
    kept = await bob.say("general", "kept message")

    async def change(user: User, method: str, seq: int, body: dict[str, Any] | None) -> None:
        r = await api.http.request(
            method, f"/city/rooms/general/messages/{seq}", json=body, headers=user.headers
        )
        assert r.status_code == 200, r.text

    await change(alice, "PATCH", edited["seq"], {"body": "revised wording here"})
    assert await bodies(api, "original") == []
    assert await bodies(api, "revised wording") == ["revised wording here"]
    assert await bodies(api, "wording here") == ["revised wording here"]
    await change(alice, "DELETE", mine["seq"], None)
    await change(admin, "DELETE", moderated["seq"], None)
    assert await bodies(api, "message") == ["kept message"]
    assert await bodies(api, "mistaken") == []
    assert await bodies(api, "spammy") == []
    # Erasure will turn messages into tombstones with a plain UPDATE: they go at once.
    async with server.resources.db.begin() as conn:
        await conn.execute(
            room_messages.update()
            .where(room_messages.c.id == kept["id"])
            .values(deleted=True, deleted_by="erasure", username="deleted user")
        )
    assert await bodies(api, "kept") == []
    # A reaction (an UPDATE of other columns) leaves the words where they are.
    r = await api.http.put(
        f"/city/rooms/general/messages/{edited['seq']}/reactions/👍", headers=bob.headers
    )
    assert r.status_code == 200, r.text
    assert await bodies(api, "revised") == ["revised wording here"]


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    # Many searches from 127.0.0.1 in a burst; the rate limit's test sets it back.
    base: dict[str, Any] = {
        "city_admins": "boss",
        "city_search_rate": 1000.0,
        "city_search_burst": 10_000,
    }
    return {**base, **getattr(request, "param", {})}


@pytest.mark.parametrize(
    "settings_overrides", [{"city_search_rate": 0.01, "city_search_burst": 3}], indirect=True
)
async def test_searches_are_rate_limited_per_address(api: Api) -> None:
    for _ in range(3):
        assert (await find(api, "anything")).status_code == 200
    r = await find(api, "anything")
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("settings_overrides", [{"city_search_timeout": 0.2}], indirect=True)
async def test_a_search_past_its_timeout_is_503(api: Api, server: Server, backend: str) -> None:
    alice = await api.guest("Alice")
    await alice.say("general", "slow hello")
    if backend == "postgresql":
        # A statement that waits for a lock counts against statement_timeout like one that works.
        url = server.settings.database_url
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE city_room_messages IN ACCESS EXCLUSIVE MODE")
                r = await find(api, "slow")
        finally:
            await conn.close()
    else:
        # SQLite's progress handler: with the deadline all but gone, the first look stops it.
        await asyncio.gather(*(alice.say("general", f"slow message {i}") for i in range(200)))
        server.settings.city_search_timeout = 1e-9
        r = await find(api, "slow")
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "search_timeout"
    server.settings.city_search_timeout = 5.0
    assert await bodies(api, "hello") == ["slow hello"]


async def test_search_is_public_and_answers_the_message_as_posted(api: Api) -> None:
    alice = await api.guest("Alice")
    m = await alice.say("welcome", "public words")
    r = await api.http.get("/city/search", params={"q": "public"})
    assert r.status_code == 200
    (hit,) = r.json()["results"]
    assert hit["message"]["id"] == m["id"]
    assert hit["message"] == m  # the Message of the post's own answer
    assert r.json()["next"] is None


def test_cursors_round_trip_exactly() -> None:
    """A cursor names its hit to the microsecond (a float would be off by one now and then,
    which would skip or repeat a hit); anything else is 422 ``invalid_cursor``."""
    for micros in (0, 1, 123_456, 751_001, 999_999):
        at = datetime(2026, 12, 3, 6, 31, 47, micros, tzinfo=UTC)
        assert decode_cursor(encode_cursor((at, "m_x"))) == (at, "m_x")
    assert decode_cursor(encode_cursor(2**62)) == 2**62
    for bad in ("", "eDox", encode_cursor(1)[:-1] + "!", "bjotMQ"):
        with pytest.raises(Unprocessable):
            decode_cursor(bad)
