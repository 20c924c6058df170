"""The Matrix rooms bridge (SPEC 6b) against a real Synapse, with matrix-nio as the Matrix user:
each mapping both ways, and no duplicate on either side after all of it.

One Synapse and one city (SQLite) serve the whole module: Synapse pushes its transactions to the
city's fixed port, and backs off for a while when nothing answers there."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from nio import AsyncClient, JoinResponse, MessageDirection, RoomMessagesResponse, RoomSendResponse

from daarion_city.config import Settings
from daarion_city.matrix.appservice import registration
from daarion_city.matrix.ids import puppet_id
from tests.cluster import free_port
from tests.conftest import make_settings
from tests.support import Api, User, run_server
from tests.synapse import SERVER_NAME, Synapse

pytestmark = pytest.mark.asyncio(loop_scope="module")

AS_TOKEN = "as-" + secrets.token_hex(16)
HS_TOKEN = "hs-" + secrets.token_hex(16)


def bridge_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "matrix_server_name": SERVER_NAME,
        "matrix_as_token": AS_TOKEN,
        "matrix_hs_token": HS_TOKEN,
        "matrix_as_url": f"http://127.0.0.1:{port}",
        "matrix_bridge_rooms": "*",
        "matrix_bridge_poll": 0.2,
        **extra,
    }


@pytest.fixture(scope="module")
def city_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory, city_port: int) -> Iterator[Synapse]:
    server = Synapse(
        tmp_path_factory.mktemp("synapse"), registration(Settings(**bridge_settings(city_port)))
    )
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def city(
    synapse: Synapse, city_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    data = tmp_path_factory.mktemp("city")
    settings = make_settings(
        f"sqlite:///{data / 'city.sqlite3'}",
        data,
        **bridge_settings(city_port, matrix_homeserver_url=synapse.url),
    )
    async with run_server(settings, port=city_port) as server:
        api = Api(server)
        try:
            yield api
        finally:
            await api.aclose()


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class MatrixUser:
    """A Matrix user of the homeserver, through matrix-nio."""

    def __init__(self, synapse: Synapse, name: str) -> None:
        self.name = name
        self.client = AsyncClient(synapse.url, f"@{name}:{SERVER_NAME}")
        self.synapse = synapse

    async def __aenter__(self) -> MatrixUser:
        token = await asyncio.to_thread(self.synapse.register_user, self.name, "pass-" + self.name)
        self.client.access_token = token
        self.client.user_id = f"@{self.name}:{SERVER_NAME}"
        await self.client.set_displayname(self.name.capitalize())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def join(self, alias: str) -> str:
        r = await self.client.join(alias)
        assert isinstance(r, JoinResponse), r
        return str(r.room_id)

    async def send(
        self, room_id: str, content: dict[str, Any], kind: str = "m.room.message"
    ) -> str:
        r = await self.client.room_send(room_id, kind, content)
        assert isinstance(r, RoomSendResponse), r
        return str(r.event_id)

    async def events(self, room_id: str) -> list[dict[str, Any]]:
        """The room's timeline as this user sees it, oldest first (the event sources)."""
        sync = await self.client.sync(timeout=0)
        r = await self.client.room_messages(
            room_id, start=sync.next_batch, direction=MessageDirection.back, limit=500
        )
        assert isinstance(r, RoomMessagesResponse), r
        return [e.source for e in reversed(r.chunk)]


async def bridged_room(city: Api, owner: User) -> tuple[str, str]:
    """A new city room (bridged, as every room is here): its slug and alias, once mapped."""
    slug = "br-" + secrets.token_hex(4)
    r = await owner.post("/city/rooms", {"slug": slug, "name": f"Room {slug}"})
    assert r.status_code == 201, r.text
    await owner.say(slug, "first")  # wakes the mapping

    async def mapped() -> Any:
        room = (await city.http.get(f"/city/rooms/{slug}")).json()
        return room["matrix_room_alias"]

    alias = await until(mapped, "the room's mapping")
    assert alias == f"#city_{slug}:{SERVER_NAME}"
    return slug, alias


def texts(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["sender"], e["content"].get("body", ""))
        for e in events
        if e["type"] == "m.room.message" and e["content"]
    ]


async def test_city_conversation_reaches_matrix(city: Api, synapse: Synapse) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    slug, alias = await bridged_room(city, alice)
    puppet = puppet_id(alice.user_id, SERVER_NAME)
    async with MatrixUser(synapse, "mx" + secrets.token_hex(4)) as bob:
        room_id = await bob.join(alias)
        hello = await alice.say(slug, f"hello Matrix, <@{alice.user_id}> here")
        reply = await alice.post(
            f"/city/rooms/{slug}/messages", {"body": "a reply", "reply_to_seq": hello["seq"]}
        )
        assert reply.status_code == 201

        async def arrived() -> Any:
            events = await bob.events(room_id)
            return events if len(texts(events)) >= 3 else None

        events = await until(arrived, "the city messages in Matrix")
        assert [t for t in texts(events) if t[0] == puppet] == [
            (puppet, "first"),
            (puppet, "hello Matrix, Alice here"),
            (puppet, "a reply"),
        ]
        by_body = {e["content"]["body"]: e for e in events if e["type"] == "m.room.message"}
        pill = by_body["hello Matrix, Alice here"]["content"]
        assert f'href="https://matrix.to/#/{puppet}"' in pill["formatted_body"]
        assert pill["m.mentions"] == {"user_ids": [puppet]}
        hello_event = by_body["hello Matrix, Alice here"]["event_id"]
        relates = by_body["a reply"]["content"]["m.relates_to"]
        assert relates == {"m.in_reply_to": {"event_id": hello_event}}

        # An edit, a reaction and its removal, a deletion.
        seq = reply.json()["seq"]
        r = await alice.api.http.patch(
            f"/city/rooms/{slug}/messages/{seq}",
            json={"body": "a better reply"},
            headers=alice.headers,
        )
        assert r.status_code == 200, r.text
        r = await alice.api.http.put(
            f"/city/rooms/{slug}/messages/{hello['seq']}/reactions/👍", headers=alice.headers
        )
        assert r.status_code == 200, r.text

        async def edited_and_reacted() -> Any:
            events = await bob.events(room_id)
            edits = [
                e
                for e in events
                if e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
            ]
            reactions = [e for e in events if e["type"] == "m.reaction"]
            return (edits, reactions) if edits and reactions else None

        edits, reactions = await until(edited_and_reacted, "the edit and the reaction")
        assert edits[0]["sender"] == puppet
        assert edits[0]["content"]["m.new_content"]["body"] == "a better reply"
        assert edits[0]["content"]["m.relates_to"]["event_id"] == by_body["a reply"]["event_id"]
        assert reactions[0]["content"]["m.relates_to"] == {
            "rel_type": "m.annotation",
            "event_id": hello_event,
            "key": "👍",
        }
        r = await alice.api.http.delete(
            f"/city/rooms/{slug}/messages/{hello['seq']}/reactions/👍", headers=alice.headers
        )
        assert r.status_code == 200, r.text
        r = await alice.api.http.delete(f"/city/rooms/{slug}/messages/{seq}", headers=alice.headers)
        assert r.status_code == 200, r.text

        async def redacted() -> Any:
            events = await bob.events(room_id)
            gone = {e["redacts"] for e in events if e["type"] == "m.room.redaction"}
            wanted = {reactions[0]["event_id"], by_body["a reply"]["event_id"]}
            return events if wanted <= gone else None

        events = await until(redacted, "the redactions")
        # Nothing twice: each city event reached Matrix once.
        sent = [e for e in events if e["sender"] == puppet and e["type"] != "m.room.member"]
        assert len(sent) == 7, [(e["type"], e["content"]) for e in sent]


async def test_matrix_conversation_reaches_the_city(city: Api, synapse: Synapse) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    slug, alias = await bridged_room(city, alice)
    async with MatrixUser(synapse, "mx" + secrets.token_hex(4)) as bob:
        room_id = await bob.join(alias)
        mxid = bob.client.user_id
        city_hello = await alice.say(slug, "hello from the city")

        async def city_event_in_matrix() -> Any:
            found = [
                e
                for e in await bob.events(room_id)
                if e["content"].get("body") == "hello from the city"
            ]
            return found[0]["event_id"] if found else None

        city_event = await until(city_event_in_matrix, "the city message in Matrix")
        plain = await bob.send(room_id, {"msgtype": "m.text", "body": "hi city"})
        pill = f"https://matrix.to/#/{puppet_id(alice.user_id, SERVER_NAME)}"
        await bob.send(
            room_id,
            {
                "msgtype": "m.text",
                "body": "Alice: replying",
                "format": "org.matrix.custom.html",
                "formatted_body": f'<a href="{pill}">Alice</a>: replying',
                "m.relates_to": {"m.in_reply_to": {"event_id": city_event}},
            },
        )
        await bob.send(room_id, {"msgtype": "m.emote", "body": "waves"})

        async def imported() -> Any:
            r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
            mine = [m for m in r.json()["messages"] if m["author_user_id"] == mxid]
            return mine if len(mine) >= 3 else None

        mine = await until(imported, "the Matrix messages in the city")
        assert [m["body"] for m in mine] == ["hi city", f"<@{alice.user_id}>: replying", "* waves"]
        assert mine[0]["username"] == bob.name.capitalize()
        assert mine[1]["reply_to_seq"] == city_hello["seq"]
        assert mine[1]["mentions"] == [alice.user_id]

        # An edit, a reaction, its redaction, and the message's redaction.
        await bob.send(
            room_id,
            {
                "msgtype": "m.text",
                "body": "* hi city!",
                "m.new_content": {"msgtype": "m.text", "body": "hi city!"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": plain},
            },
        )
        reaction = await bob.send(
            room_id,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": city_event, "key": "🎉"}},
            "m.reaction",
        )

        async def message(seq: int) -> dict[str, Any]:
            r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
            return next(m for m in r.json()["messages"] if m["seq"] == seq)

        async def edited_and_reacted() -> Any:
            edited = (await message(mine[0]["seq"]))["body"] == "hi city!"
            reactions = (await message(city_hello["seq"]))["reactions"]
            return edited and reactions == [{"emoji": "🎉", "count": 1, "users": [mxid]}]

        await until(edited_and_reacted, "the edit and the reaction in the city")
        await bob.client.room_redact(room_id, reaction)
        await bob.client.room_redact(room_id, plain)

        async def undone() -> Any:
            gone = (await message(mine[0]["seq"]))["deleted"]
            return gone and (await message(city_hello["seq"]))["reactions"] == []

        await until(undone, "the redactions in the city")
        # Nothing came back: the city has each Matrix message once, Matrix each city one once.
        r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
        bodies = [m["body"] for m in r.json()["messages"] if not m["deleted"]]
        assert bodies == [
            "first",
            "hello from the city",
            f"<@{alice.user_id}>: replying",
            "* waves",
        ]
        events = await bob.events(room_id)
        assert [b for _, b in texts(events)].count("hello from the city") == 1
        assert [b for _, b in texts(events)].count("hi city") == 0  # redacted


async def state_of(synapse: Synapse, room_id: str, user_id: str) -> str | None:
    """A user's membership in a room, as the bridge's bot reads it."""
    from urllib.parse import quote

    async with httpx.AsyncClient(base_url=synapse.url) as http:
        r = await http.get(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}",
            headers={"Authorization": f"Bearer {AS_TOKEN}"},
        )
    return str(r.json().get("membership")) if r.status_code == 200 else None


async def test_moderation_reaches_matrix_and_refused_events_are_redacted(
    city: Api, synapse: Synapse
) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    slug, alias = await bridged_room(city, alice)
    bot = f"@city_bridge:{SERVER_NAME}"
    async with MatrixUser(synapse, "mx" + secrets.token_hex(4)) as bob:
        room_id = await bob.join(alias)
        mxid = bob.client.user_id
        spam = await bob.send(room_id, {"msgtype": "m.text", "body": "buy now"})
        too_long = await bob.send(room_id, {"msgtype": "m.text", "body": "x" * 10_001})

        async def imported() -> Any:
            r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
            return [m for m in r.json()["messages"] if m["author_user_id"] == mxid]

        [message] = await until(imported, "the Matrix message in the city")
        assert message["body"] == "buy now"  # the one too long was not imported

        async def redactions() -> dict[str, str]:
            events = await bob.events(room_id)
            return {e["redacts"]: e["sender"] for e in events if e["type"] == "m.room.redaction"}

        assert (await until(redactions, "the bot's redaction"))[too_long] == bot
        # The room's owner deletes the Matrix user's message, then bans them.
        r = await alice.api.http.delete(
            f"/city/rooms/{slug}/messages/{message['seq']}", headers=alice.headers
        )
        assert r.status_code == 200, r.text

        async def spam_redacted() -> Any:
            return (await redactions()).get(spam) == bot

        await until(spam_redacted, "the moderator's deletion as a redaction")
        r = await alice.post(f"/city/rooms/{slug}/bans", {"user_id": mxid, "reason": "spam"})
        assert r.status_code == 201, r.text

        async def banned() -> Any:
            return await state_of(synapse, room_id, mxid) == "ban"

        await until(banned, "the ban in Matrix")
        # While a ban is on its way, what the banned user sends is not imported either.
        txn = {
            "events": [
                {
                    "type": "m.room.message",
                    "sender": mxid,
                    "room_id": room_id,
                    "event_id": "$late-" + secrets.token_hex(8),
                    "origin_server_ts": 0,
                    "content": {"msgtype": "m.text", "body": "still here"},
                }
            ]
        }
        r = await city.http.put(
            f"/_matrix/app/v1/transactions/late-{secrets.token_hex(4)}",
            json=txn,
            headers={"Authorization": f"Bearer {HS_TOKEN}"},
        )
        assert r.status_code == 200, r.text
        r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
        assert "still here" not in [m["body"] for m in r.json()["messages"]]
        r = await alice.api.http.delete(f"/city/rooms/{slug}/bans/{mxid}", headers=alice.headers)
        assert r.status_code == 200, r.text

        async def unbanned() -> Any:
            return await state_of(synapse, room_id, mxid) == "leave"

        await until(unbanned, "the unban in Matrix")


async def test_a_repeated_transaction_imports_nothing(city: Api, synapse: Synapse) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    slug, _ = await bridged_room(city, alice)
    room = (await city.http.get(f"/city/rooms/{slug}")).json()
    event = {
        "type": "m.room.message",
        "sender": f"@carol{secrets.token_hex(3)}:{SERVER_NAME}",
        "room_id": room["matrix_room_id"],
        "origin_server_ts": 0,
        "content": {"msgtype": "m.text", "body": "once"},
    }
    txn_id = "t-" + secrets.token_hex(6)
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    for i in range(3):  # the same txnId three times, then its event in another transaction
        body = {"events": [{**event, "event_id": "$once-" + txn_id}]}
        name = txn_id if i < 2 else txn_id + "-again"
        r = await city.http.put(f"/_matrix/app/v1/transactions/{name}", json=body, headers=headers)
        assert r.status_code == 200, r.text
    r = await city.http.get(f"/city/rooms/{slug}/messages", params={"limit": 50})
    assert [m["body"] for m in r.json()["messages"]].count("once") == 1


async def create_aliased_room(synapse: Synapse, slug: str, as_user: str | None) -> str:
    """A Matrix room with the alias of city room ``slug``, made through the application service
    by the bot (None) or by one of its puppets."""
    params = {"user_id": as_user} if as_user else None
    async with httpx.AsyncClient(base_url=synapse.url) as http:
        if as_user:
            r = await http.post(
                "/_matrix/client/v3/register",
                json={"type": "m.login.application_service", "username": as_user[1:].split(":")[0]},
                headers={"Authorization": f"Bearer {AS_TOKEN}"},
            )
            assert r.status_code in (200, 400), r.text
        r = await http.post(
            "/_matrix/client/v3/createRoom",
            params=params,
            json={"room_alias_name": f"city_{slug}", "preset": "public_chat"},
            headers={"Authorization": f"Bearer {AS_TOKEN}"},
        )
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


async def test_an_existing_alias_is_adopted_only_with_the_bots_power(
    city: Api, synapse: Synapse
) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    adopt, foreign = "ad-" + secrets.token_hex(3), "fo-" + secrets.token_hex(3)
    made_by_bot = await create_aliased_room(synapse, adopt, None)
    made_by_other = await create_aliased_room(
        synapse, foreign, puppet_id("someone_" + secrets.token_hex(2), SERVER_NAME)
    )
    for slug in (adopt, foreign):
        r = await alice.post("/city/rooms", {"slug": slug, "name": f"Room {slug}"})
        assert r.status_code == 201, r.text
        await alice.say(slug, "hello")

    async def room(slug: str) -> dict[str, Any]:
        return dict((await city.http.get(f"/city/rooms/{slug}")).json())

    async def adopted() -> Any:
        return (await room(adopt))["matrix_room_id"]

    assert await until(adopted, "the adoption") == made_by_bot
    await asyncio.sleep(1.0)  # the other room was looked at too, and left alone
    assert (await room(foreign))["matrix_room_id"] is None
    assert made_by_other


async def test_an_erased_users_matrix_copies_are_redacted_by_the_bot(
    city: Api, synapse: Synapse
) -> None:
    alice = city.user("u_alice_" + secrets.token_hex(3), "Alice")
    slug, alias = await bridged_room(city, alice)
    nina = city.user("u_nina_" + secrets.token_hex(3), "Nina")
    puppet, bot = puppet_id(nina.user_id, SERVER_NAME), f"@city_bridge:{SERVER_NAME}"
    async with MatrixUser(synapse, "mx" + secrets.token_hex(4)) as bob:
        room_id = await bob.join(alias)
        await nina.say(slug, "nina was here")

        async def sent() -> list[str]:
            return [
                e["event_id"]
                for e in await bob.events(room_id)
                if e["sender"] == puppet and e["content"].get("body") == "nina was here"
            ]

        [event_id] = await until(sent, "Nina's message in Matrix")
        r = await city.http.delete("/city/me", headers=nina.headers)
        assert r.status_code == 202, r.text

        async def redacted_by() -> str | None:
            events = await bob.events(room_id)
            by = {e["redacts"]: e["sender"] for e in events if e["type"] == "m.room.redaction"}
            return by.get(event_id)

        assert await until(redacted_by, "the redaction of the erased user's message") == bot
