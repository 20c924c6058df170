"""Every metric family ``/metrics`` exports moves when what it names moves, on SQLite and
PostgreSQL. The test drives the service as its clients do (HTTP posts and errors, room and
presence sockets, the feed's SSE stream, a bad frame, a rate-limit hit) and compares scrapes;
the families come from ``/metrics`` itself, so a new metric that nothing here drives fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.feed.receiver import SECRET, Receiver
from tests.feed.test_feed import sse
from tests.support import Api, eventually, open_socket

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Families that only a peer this test cannot start cheaply would move (a Second Me provider,
# a Matrix homeserver). Each entry says why; keep it empty whenever the peer can be faked.
NEEDS_A_PEER: dict[str, str] = {}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with r.running():
        yield r


@pytest.fixture
def settings_overrides(receiver: Receiver) -> dict[str, Any]:
    """Webhooks on, to a receiver on a loopback port (their deliveries are counted too)."""
    return {"city_webhook_url": receiver.url, "city_webhook_secret": SECRET}


async def scrape(api: Api) -> dict[str, Samples]:
    r = await api.http.get("/metrics")
    assert r.status_code == 200
    families: dict[str, Samples] = {}
    for family in text_string_to_metric_families(r.text):
        if family.name.endswith("_created"):
            continue  # when a counter's series appeared (the text format's own family)
        families[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for s in family.samples
            if not s.name.endswith("_created")  # when a series appeared, not what it counts
        }
    return families


def value(families: dict[str, Samples], name: str, **labels: str) -> float:
    """A gauge's value, or a counter's total (``name`` is the family's)."""
    key = tuple(sorted(labels.items()))
    return sum(
        v
        for (sample, lbl), v in families[name].items()
        if sample in (name, f"{name}_total") and lbl == key
    )


async def test_every_exported_metric_moves_with_what_it_names(api: Api, receiver: Receiver) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    await bob.post("/city/rooms/science/join")  # so the room's new messages push his counts
    before = await scrape(api)
    assert before, "no metric exported"
    async with (
        alice.socket("science") as a,
        bob.socket("science") as b,
        open_socket(api.server, "/ws/city/presence", token=bob.token) as p,
        sse(api) as feed,
    ):
        for ws in (a, b):
            await ws.expect("room.state")
        await p.expect("presence.bulk_update")
        for i in range(3):
            await alice.say("science", f"m{i}")
        for ws in (a, b):
            for _ in range(3):
                await ws.expect("room.message")
        await asyncio.wait_for(feed.get(), 5)
        await p.expect("unread.update", room_id="room_city_science")
        assert (await api.http.get("/city/rooms/nowhere")).status_code == 404
        for _ in range(2):  # a public read: loaded once, then answered from memory
            assert (await api.http.get("/city/rooms")).status_code == 200
        await a.send("not json")  # an error event
        assert (await a.expect("error"))["code"] == "invalid_json"
        # Heartbeats faster than the socket's bucket: coalesced, then rate-limited.
        for _ in range(30):
            await p.send({"event": "presence.heartbeat"})
        assert (await p.expect("error"))["code"] == "rate_limited"
        await eventually(lambda: len(receiver.delivered()) >= 3, 10, "no webhook delivered")

        async def hooks_counted() -> bool:  # the sender's process tells its counts in 0.2 s
            return value(await scrape(api), "city_webhook_deliveries", result="delivered") >= 3

        await eventually(hooks_counted, 10, "webhook deliveries not counted")
        during = await scrape(api)

        unmoved = sorted(
            name
            for name, samples in during.items()
            if name not in NEEDS_A_PEER and samples == before.get(name)
        )
        assert not unmoved, f"exported metrics that did not move: {unmoved}"
        assert value(during, "city_room_sockets") == value(before, "city_room_sockets") + 2
        assert value(during, "city_presence_sockets") == value(before, "city_presence_sockets") + 1
        assert value(during, "city_presence_online") == value(before, "city_presence_online") + 1
        assert value(during, "city_messages") == value(before, "city_messages") + 3
        assert value(during, "city_deliveries") >= value(before, "city_deliveries") + 6
        assert value(during, "city_ws_errors", code="invalid_json") == 1
        assert value(during, "city_ws_errors", code="rate_limited") >= 1
        assert value(during, "city_http_requests", method="GET", status="404") >= 1
        for result in ("load", "hit"):
            assert value(during, "city_read_snapshots", read="rooms", result=result) >= 1

    # The gauges come back down when what they count goes away.
    async def back_down() -> dict[str, Any]:
        while True:
            after = await scrape(api)
            names = ("city_room_sockets", "city_presence_sockets", "city_presence_online")
            if all(value(after, n) == value(before, n) for n in names):
                return after
            await asyncio.sleep(0.05)

    after = await asyncio.wait_for(back_down(), 5)
    assert value(after, "city_messages") == value(during, "city_messages")
