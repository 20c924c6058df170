"""Conversation, SPEC section 9: replies and mentions on the one timeline, over HTTP and the
room socket, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Api

V2_DEFAULTS = {
    "reply_to_seq": None,
    "mentions": [],
    "edited_at": None,
    "deleted": False,
    "deleted_by": None,
    "reactions": [],
}


def v2(message: dict[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in V2_DEFAULTS}


async def test_a_message_carries_the_v2_fields_everywhere(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        posted = await alice.say("science", "plain")
        live = (await ws.expect("room.message"))["message"]
    page = (await api.http.get("/city/rooms/science/messages")).json()["messages"]
    detail = (await api.http.get("/city/rooms/science")).json()
    for message in (posted, live, page[-1], detail["messages"][-1], detail["last_message"]):
        assert v2(message) == V2_DEFAULTS


async def test_a_reply_names_a_message_of_its_room(api: Api) -> None:
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    first = await alice.say("science", "what is the plan?")
    other_room = await alice.say("general", "elsewhere")
    r = await bob.post(
        "/city/rooms/science/messages", {"body": "this one", "reply_to_seq": first["seq"]}
    )
    assert r.status_code == 201, r.text
    assert r.json()["reply_to_seq"] == first["seq"]
    page = (await api.http.get("/city/rooms/science/messages")).json()["messages"]
    assert page[-1]["reply_to_seq"] == first["seq"]
    # A seq with no message in this room (none at all, or only another room's): 422.
    for seq in (first["seq"] + 50, other_room["seq"] + 100):
        r = await bob.post("/city/rooms/science/messages", {"body": "x", "reply_to_seq": seq})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_reply"
    for bad in (0, -1, "one", 2**53):
        r = await bob.post("/city/rooms/science/messages", {"body": "x", "reply_to_seq": bad})
        assert r.status_code == 422, bad
    async with bob.socket("science") as ws:
        await ws.expect("room.state")
        await ws.send({"event": "room.message.send", "body": "x", "reply_to_seq": 999})
        error = await ws.expect("error")
        assert error["code"] == "invalid_reply"
        await ws.send(
            {
                "event": "room.message.send",
                "body": "ok",
                "reply_to_seq": first["seq"],
                "client_msg_id": "r1",
            }
        )
        ack = await ws.expect("room.message.ack", client_msg_id="r1")
        assert ack["message"]["reply_to_seq"] == first["seq"]
    page = (await api.http.get("/city/rooms/science/messages")).json()["messages"]
    assert [m["body"] for m in page[-2:]] == ["this one", "ok"]  # nothing else was stored


async def test_mentions_are_listed_once_in_order(api: Api) -> None:
    alice = await api.guest("Alice")
    body = "hi <@u_bob>, <@@eve:matrix.org> and <@u_bob> again; <@not valid> <@>"
    message = await alice.say("science", body)
    assert message["mentions"] == ["u_bob", "@eve:matrix.org"]
    assert message["body"] == body


@pytest.mark.parametrize("settings_overrides", [{"city_max_mentions": 2}])
async def test_too_many_mentions_are_refused(api: Api) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/city/rooms/science/messages", {"body": "<@a1> <@a2> <@a3>"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "too_many_mentions"
    ok = await alice.say("science", "<@a1> <@a2> <@a1>")
    assert ok["mentions"] == ["a1", "a2"]
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        await ws.send({"event": "room.message.send", "body": "<@a1> <@a2> <@a3>"})
        assert (await ws.expect("error"))["code"] == "too_many_mentions"
