"""The city feed: events written with their change, listed newest first, streamed as SSE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from tests.support import Api


async def test_bootstrap_event_is_seeded(api: Api) -> None:
    feed = (await api.http.get("/city/feed")).json()
    assert len(feed) == 1
    (event,) = feed
    assert event["id"] == "evt_city_welcome_001"
    assert event["kind"] == "system"
    assert event["room_id"] == "room_city_welcome"
    assert event["agent_id"] == "ag_system"
    assert event["payload"] == {"message": "Система ініціалізована", "type": "bootstrap"}
    assert event["created_at"].endswith("Z")


async def test_changes_write_feed_events(api: Api) -> None:
    alice = await api.guest("Alice")
    await alice.post("/city/rooms", {"slug": "garden", "name": "Garden"})
    m = await alice.say("garden", "x" * 150)
    await alice.post("/city/rooms/garden/join")
    await alice.post("/city/rooms/garden/leave")
    feed = (await api.http.get("/city/feed")).json()
    assert [e["kind"] for e in feed] == [
        "member_left",
        "member_joined",
        "room_message",
        "room_created",
        "system",
    ]
    created, message = feed[3], feed[2]
    assert created["payload"] == {"slug": "garden", "name": "Garden"}
    assert created["user_id"] == alice.user_id
    assert created["room_id"] == "room_city_garden"
    assert message["payload"] == {"message_id": m["id"], "snippet": "x" * 100}
    assert all(e["user_id"] == alice.user_id for e in feed[:4])


async def test_feed_paging_and_kind_filter(api: Api) -> None:
    alice = await api.guest("Alice")
    for i in range(5):
        await alice.say("science", f"m{i}")
    newest = (await api.http.get("/city/feed", params={"limit": 2})).json()
    assert [e["payload"]["snippet"] for e in newest] == ["m4", "m3"]
    older = (
        await api.http.get("/city/feed", params={"limit": 2, "before": newest[-1]["id"]})
    ).json()
    assert [e["payload"]["snippet"] for e in older] == ["m2", "m1"]
    only = (await api.http.get("/city/feed", params={"kind": "system"})).json()
    assert [e["kind"] for e in only] == ["system"]
    assert (await api.http.get("/city/feed", params={"kind": "nonsense"})).status_code == 422
    missing = await api.http.get("/city/feed", params={"before": "evt_nope"})
    assert missing.status_code == 404
    assert missing.json()["code"] == "event_not_found"
    for bad in ({"limit": 0}, {"limit": 101}):
        assert (await api.http.get("/city/feed", params=bad)).status_code == 422


@contextlib.asynccontextmanager
async def sse(api: Api, headers: dict[str, str] | None = None) -> AsyncIterator[asyncio.Queue[Any]]:
    """Read the SSE stream in the background; yields a queue of (id, data) pairs."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    opened = asyncio.Event()

    async def reader() -> None:
        async with (
            httpx.AsyncClient(base_url=api.server.base_url, timeout=None) as client,
            client.stream("GET", "/city/feed/stream", headers=headers) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            opened.set()
            event_id = None
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    await queue.put((event_id, orjson.loads(line[6:])))

    task = asyncio.create_task(reader())
    await asyncio.wait_for(opened.wait(), 5)
    await asyncio.sleep(0.1)  # the subscription is registered when the body starts
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_stream_delivers_new_events_live(api: Api) -> None:
    alice = await api.guest("Alice")
    async with sse(api) as events:
        m = await alice.say("science", "streamed")
        event_id, event = await asyncio.wait_for(events.get(), 5)
        assert event["kind"] == "room_message"
        assert event["payload"]["message_id"] == m["id"]
        assert event_id == event["id"]
        # Posts that share a commit reach the stream as one bus item: every event arrives.
        posted = await asyncio.gather(*(alice.say("science", f"many {i}") for i in range(8)))
        got = [(await asyncio.wait_for(events.get(), 5))[1] for _ in posted]
        assert sorted(e["payload"]["message_id"] for e in got) == sorted(m["id"] for m in posted)
        await asyncio.sleep(0.2)
        assert events.empty()


async def test_stream_resumes_after_last_event_id(api: Api) -> None:
    alice = await api.guest("Alice")
    await alice.say("science", "one")
    feed = (await api.http.get("/city/feed")).json()
    mark = feed[0]["id"]
    await alice.say("science", "two")
    await alice.say("science", "three")
    async with sse(api, {"Last-Event-ID": mark}) as events:
        got = [(await asyncio.wait_for(events.get(), 5))[1]["payload"]["snippet"] for _ in range(2)]
        assert got == ["two", "three"]
        await alice.say("science", "four")
        assert (await asyncio.wait_for(events.get(), 5))[1]["payload"]["snippet"] == "four"
        await asyncio.sleep(0.2)
        assert events.empty()
