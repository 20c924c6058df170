"""The served ``/asyncapi.json`` cannot drift from the sockets: real room and presence sockets
are driven through every frame kind, both ways; each frame sent and received is validated
against the document's schema of its message (a server frame must be exactly one message of its
channel's ``send`` operation, with no key its schema does not list), and every message and
event of the document must have been seen on its socket."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.realtime.asyncapi_check import Checked, Frames
from tests.support import Api, open_socket

PLAZA = "/city/rooms/plaza"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"city_large_room": 2, "city_room_online_interval": 0.2}


SOCKET = "/ws/city/rooms/plaza"


async def test_every_frame_both_ways_matches_the_document(api: Api) -> None:
    frames = Frames((await api.http.get("/asyncapi.json")).json())
    server = api.server
    alice, bob = await api.guest("Alice"), await api.guest("Bob")
    assert (await alice.post("/city/rooms", {"slug": "plaza", "name": "Plaza"})).status_code == 201
    await bob.get("/city/me")  # Bob has been seen: mentions of him notify him
    async with (
        open_socket(server, "/ws/city/presence") as raw_bp,
        open_socket(server, "/ws/city/rooms/plaza", token=alice.token) as raw_a,
    ):
        bp, a = Checked(raw_bp, frames, "presence"), Checked(raw_a, frames, "room")
        await bp.send({"event": "auth", "token": bob.token})
        await bp.expect("presence.bulk_update")
        await bp.expect("unread.bulk")
        await a.expect("room.state")
        assert (await bob.post(f"{PLAZA}/join")).status_code == 200
        await a.expect("room.member", user_id=bob.user_id, membership="join")
        async with open_socket(server, "/ws/city/rooms/plaza") as raw_b:
            b = Checked(raw_b, frames, "room")
            await b.send({"event": "auth", "token": bob.token})
            await b.expect("room.state")
            await a.expect("room.join", user_id=bob.user_id)

            # Typing, a message with its ack, a mention's notification and counts.
            await b.send({"event": "room.typing", "typing": True})
            await a.expect("room.typing", user_id=bob.user_id, typing=True)
            mention = {"body": f"hi <@{bob.user_id}>", "client_msg_id": "m1"}
            await a.send({"event": "room.message.send", **mention})
            first = (await a.expect("room.message.ack", client_msg_id="m1"))["message"]
            await b.expect("room.message")
            await bp.expect("notification", room_id=first["room_id"])
            await bp.expect("unread.update", room_id=first["room_id"])
            await b.send({"event": "room.message.send", "body": "re", "reply_to_seq": first["seq"]})
            reply = (await b.expect("room.message.ack", client_msg_id=None))["message"]
            bad_reply = {"body": "?", "client_msg_id": "r2", "reply_to_seq": 10**6}
            await b.send({"event": "room.message.send", **bad_reply})
            await b.expect("error", code="invalid_reply", client_msg_id="r2")

            # An edit, a reaction made and taken back, a deletion (over HTTP, seen live).
            at = f"{PLAZA}/messages/{first['seq']}"
            r = await api.http.patch(at, json={"body": "edited"}, headers=alice.headers)
            assert r.status_code == 200, r.text
            await b.expect("room.message.edit")
            react = f"{at}/reactions/{quote('👍')}"
            assert (await api.http.put(react, headers=bob.headers)).status_code == 200
            await a.expect("room.reaction", op="add")
            assert (await api.http.delete(react, headers=bob.headers)).status_code == 200
            await a.expect("room.reaction", op="remove")
            assert (await api.http.delete(at, headers=alice.headers)).status_code == 200
            await b.expect("room.message.delete")

            # Presence changes reach the room's sockets too; the marker moves the counts.
            await bp.send({"event": "presence.heartbeat", "status": "away"})
            await bp.expect("presence.update", user_id=bob.user_id, status="away")
            await a.expect("presence.update", user_id=bob.user_id, status="away")
            assert (await bob.post(f"{PLAZA}/read", {"seq": reply["seq"]})).status_code == 200
            await bp.expect("unread.update", last_read_seq=reply["seq"])

            # Legacy frames, ping, and frames the socket refuses.
            await b.send({"event": "room.join"})
            await b.send({"event": "room.leave"})
            await b.send({"event": "ping"})
            await b.expect("pong")
            for raw, code in [
                ("not json", "invalid_json"),
                ("[1]", "invalid_frame"),
                ('{"event": "room.nope"}', "unknown_event"),
                ('{"event": "room.typing", "typing": "yes"}', "invalid_frame"),
                ('{"event": "room.message.send", "body": " "}', "invalid_frame"),
            ]:
                await b.send_invalid(raw)
                await b.expect("error", code=code)

            # A ban: the error frame says why, then 4403.
            r = await alice.post(f"{PLAZA}/bans", {"user_id": bob.user_id, "reason": "test"})
            assert r.status_code == 201, r.text
            await b.expect("error", code="banned")
            assert await raw_b.closed_with() == 4403
        await a.expect("room.leave", user_id=bob.user_id)

        # The presence socket: ping, a refused frame, heartbeats past the bucket.
        await bp.send({"event": "ping"})
        await bp.expect("pong")
        await bp.send_invalid('{"event": "presence.heartbeat", "status": "busy"}')
        await bp.expect("error", code="invalid_frame")
        for _ in range(25):
            await bp.send({"event": "presence.heartbeat", "last_active_ago_ms": 0})
        await bp.expect("error", code="rate_limited")

    # A resume replays the timeline as the socket sent it; one from the future is told to resync.
    async with open_socket(server, SOCKET, token=alice.token, since_seq=0) as raw:
        ws = Checked(raw, frames, "room")
        await ws.expect("room.state")
        await ws.expect("room.message.delete")
    async with open_socket(
        server, "/ws/city/rooms/plaza", token=alice.token, since_seq=10**9
    ) as raw:
        ws = Checked(raw, frames, "room")
        await ws.expect("room.state")
        await ws.expect("error", code="resync_required")

    # An erased account's sockets are told why before the 4401 close.
    erin = await api.guest("Erin")
    async with (
        open_socket(server, SOCKET, token=erin.token) as raw_room,
        open_socket(server, "/ws/city/presence", token=erin.token) as raw_presence,
    ):
        room, presence = (
            Checked(raw_room, frames, "room"),
            Checked(raw_presence, frames, "presence"),
        )
        await room.expect("room.state")
        await presence.expect("unread.bulk")
        assert (await api.http.delete("/city/me", headers=erin.headers)).status_code == 202
        for ws in (room, presence):
            await ws.expect("error", code="unauthorized")

    # A large room (above CITY_LARGE_ROOM = 2 here): a fresh room.state at the crossing, then the
    # count as room.online.
    carol, dave, finn = await api.guest("Carol"), await api.guest("Dave"), await api.guest("Finn")
    async with open_socket(server, SOCKET, token=alice.token) as raw:
        ws = Checked(raw, frames, "room")
        await ws.expect("room.state", large=False, members_online=1)
        async with open_socket(server, SOCKET, token=carol.token):
            await ws.expect("room.join", user_id=carol.user_id)
            async with open_socket(server, SOCKET, token=dave.token):
                await ws.expect("room.state", large=True, members_online=3)
                async with open_socket(server, SOCKET, token=finn.token):
                    await ws.expect("room.online", members_online=4)

    assert frames.unseen() == []


@pytest.mark.parametrize(
    ("channel", "path", "query", "code"),
    [
        ("room", "/ws/city/rooms/general", {"token": "nope"}, 4401),
        ("room", "/ws/city/rooms/no-such-room", {}, 4404),
        ("room", "/ws/city/rooms/general", {"since_seq": "-1"}, 4400),
        ("presence", "/ws/city/presence", {"token": "nope"}, 4401),
    ],
)
async def test_a_refused_socket_closes_with_a_code_its_channel_lists(
    api: Api, channel: str, path: str, query: dict[str, Any], code: int
) -> None:
    doc = (await api.http.get("/asyncapi.json")).json()
    assert code in doc["channels"][channel]["x-close-codes"]
    user = await api.guest("Carol")
    async with open_socket(api.server, path, **{"token": user.token, **query}) as ws:
        assert await ws.closed_with() == code
