"""Webhooks (SPEC 11, 12): every feed event POSTed to a real receiver on a loopback port, in feed
order, at least once, signed; retried while the receiver fails, hangs or refuses connections;
kept across a restart; dropped past the retry window; one sender in a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from daarion_city.app.wiring import ConfigurationError, check_settings
from daarion_city.config import Settings
from daarion_city.feed.signing import sign, verify
from daarion_city.feed.webhookproc import WebhookProcess, child_env
from daarion_city.storage import webhooks as outbox
from tests.feed.receiver import SECRET, Receiver
from tests.ops.test_metrics import scrape, value
from tests.support import Api, eventually, run_server

SEEDED = "evt_city_welcome_001"  # written by the migration, before any webhook setting


@pytest.fixture
async def receiver() -> Receiver:
    """A receiver whose port is known (started once), not running: tests start it."""
    r = Receiver()
    async with r.running():
        pass
    return r


def hooks(receiver: Receiver, **more: Any) -> dict[str, Any]:
    return {
        "city_webhook_url": receiver.url,
        "city_webhook_secret": SECRET,
        "city_webhook_timeout": 1.0,
        "city_webhook_poll": 0.2,
        "city_webhook_max_backoff": 1.0,
        **more,
    }


@pytest.fixture
def settings_overrides(receiver: Receiver, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Webhooks to the receiver, and the test's own (``indirect``; None: webhooks off)."""
    more = getattr(request, "param", {})
    return {} if more is None else hooks(receiver, **more)


async def feed(api: Api) -> list[dict[str, Any]]:
    """The feed oldest first, without the seeded event."""
    events = (await api.http.get("/city/feed", params={"limit": 100})).json()
    return [e for e in reversed(events) if e["id"] != SEEDED]


async def all_arrived(api: Api, receiver: Receiver, timeout: float = 30) -> list[dict[str, Any]]:
    events = await feed(api)
    assert events
    ids = {e["id"] for e in events}
    await eventually(lambda: ids <= set(receiver.delivered()), timeout, "events not delivered")
    return events


def check_order(receiver: Receiver, events: list[dict[str, Any]]) -> None:
    """Each event delivered once, in feed order; every attempt signed; the attempts' first
    sightings in feed order too (a later event never tried before an earlier one)."""
    ids = [e["id"] for e in events]
    assert receiver.delivered() == ids
    assert list(dict.fromkeys(r.event_id for r in receiver.requests)) == ids
    assert receiver.verified()
    for r in receiver.requests:
        assert r.content_type == "application/json"
        assert r.event["id"] == r.event_id


async def counted(api: Api, result: str, n: int, at_least: bool = False) -> None:
    """``city_webhook_deliveries{result}`` reaches ``n`` (a sender in its own process tells
    the instance its counts a moment after the receiver saw the requests)."""

    async def reached() -> bool:
        got = value(await scrape(api), "city_webhook_deliveries", result=result)
        return got >= n if at_least else got == n

    await eventually(reached, 10, f"{result} never counted {n}")


async def activity(api: Api, slug: str = "garden") -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    assert (await alice.post("/city/rooms", {"slug": slug, "name": slug})).status_code == 201
    assert (await bob.post(f"/city/rooms/{slug}/join")).status_code in (200, 201)
    first = await alice.say(slug, "hello", client_msg_id="c1")
    replay = await alice.post(f"/city/rooms/{slug}/messages", {"body": "hi", "client_msg_id": "c1"})
    assert replay.json()["id"] == first["id"]  # the stored message: no second event
    for i in range(4):
        await bob.say(slug, f"m{i} " + "x" * 120)
    assert (await bob.post(f"/city/rooms/{slug}/leave")).status_code in (200, 204)


async def test_every_event_arrives_in_order_as_the_feed_shows_it(
    api: Api, receiver: Receiver
) -> None:
    async with receiver.running():
        await activity(api)
        events = await all_arrived(api, receiver)
    assert {e["kind"] for e in events} >= {
        "room_created",
        "member_joined",
        "room_message",
        "member_left",
    }
    check_order(receiver, events)
    for request, event in zip(receiver.requests, events, strict=True):
        assert request.event == event  # the body is the feed's JSON of the event
    await counted(api, "delivered", len(events))
    assert value(await scrape(api), "city_webhook_deliveries", result="failed") == 0
    db = api.server.resources.db
    async with db.read() as conn:
        assert await outbox.pending(conn) == 0


async def test_a_failing_hanging_and_closed_receiver_gets_everything_once_it_recovers(
    api: Api, receiver: Receiver
) -> None:
    async with receiver.running():
        receiver.mode = "fail"
        await activity(api, "one")
        await eventually(lambda: len(receiver.requests) >= 3, 10, "no retries")
        assert len({r.event_id for r in receiver.requests}) == 1  # the head holds the rest
        receiver.mode = "hang"
        await eventually(lambda: receiver.requests[-1].status == 0, 10, "no hung attempt")
    # Closed: connections refused meanwhile.
    await activity(api, "two")
    await asyncio.sleep(1.5)
    receiver.mode = "ok"
    async with receiver.running():
        events = await all_arrived(api, receiver)
    check_order(receiver, events)
    assert not any(r.delivered for r in receiver.requests[:3])
    await counted(api, "delivered", len(events))
    await counted(api, "failed", 4, at_least=True)
    assert value(await scrape(api), "city_webhook_deliveries", result="dropped") == 0


async def test_a_restart_loses_nothing(settings: Settings, receiver: Receiver) -> None:
    """Events written while the receiver is away stay in the database's outbox across a
    restart of the service; the new process sends them, each as the feed shows it then (a
    message deleted meanwhile without its snippet)."""
    async with run_server(settings) as first:
        api = Api(first)
        try:
            await activity(api)
            alice = await api.guest("Carol")
            said = await alice.say("garden", "soon gone")
            r = await api.http.delete(
                f"/city/rooms/garden/messages/{said['seq']}", headers=alice.headers
            )
            assert r.status_code == 200
            await asyncio.sleep(0.5)  # attempts refused meanwhile
        finally:
            await api.aclose()
    assert not receiver.delivered()
    async with run_server(settings) as second, receiver.running():
        api = Api(second)
        try:
            events = await all_arrived(api, receiver)
        finally:
            await api.aclose()
    check_order(receiver, events)
    delivered = {r.event_id: r.event for r in receiver.requests if r.delivered}
    gone = [e for e in events if e["payload"].get("message_id") == said["id"]]
    assert gone
    assert all(delivered[e["id"]] == e for e in gone)
    assert "snippet" not in gone[0]["payload"]
    assert any(e["kind"] == "message_deleted" for e in events)


@pytest.mark.parametrize(
    "settings_overrides", [{"city_webhook_retry_hours": 1.5 / 3600}], indirect=True
)
async def test_an_event_past_the_retry_window_is_dropped_counted_and_logged(
    api: Api, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="daarion_city.feed.webhooks")
    alice = await api.guest("Alice")
    async with receiver.running():
        receiver.mode = "fail"
        await alice.say("science", "lost")
        (lost,) = await feed(api)

        async def dropped() -> bool:
            return value(await scrape(api), "city_webhook_deliveries", result="dropped") == 1

        await eventually(dropped, 15, "not dropped")
        assert {r.event_id for r in receiver.requests} == {lost["id"]}
        assert len(receiver.requests) >= 2  # retried within the window
        assert any(lost["id"] in rec.getMessage() for rec in caplog.records)
        receiver.mode = "ok"
        await alice.say("science", "found")
        lost_and_found = await feed(api)
        found = lost_and_found[-1]["id"]
        await eventually(lambda: found in receiver.delivered(), 10, "the next one not sent")
    assert receiver.delivered() == [found]
    async with api.server.resources.db.read() as conn:
        assert await outbox.pending(conn) == 0


@pytest.mark.parametrize("settings_overrides", [None], indirect=True)
async def test_webhooks_off_write_no_outbox(api: Api) -> None:
    assert not api.server.settings.webhooks_on
    await activity(api)
    async with api.server.resources.db.read() as conn:
        assert await outbox.pending(conn) == 0
    assert not (await scrape(api))["city_webhook_deliveries"]  # no attempt, of any result


async def test_a_commit_late_in_position_order_is_still_sent_in_order(
    backend: str, settings: Settings, receiver: Receiver
) -> None:
    """PostgreSQL: an event whose transaction took a lower position but commits after a
    higher one's is sent first (the gap holds the queue); a position rolled back is passed
    after CITY_WEBHOOK_ORDER_WAIT."""
    if backend != "postgresql":
        pytest.skip("SQLite commits in position order (one writer)")
    settings = settings.model_copy(update={"city_webhook_order_wait": 3.0})
    async with run_server(settings) as server, receiver.running():
        api = Api(server)
        try:
            alice = await api.guest("Alice")
            await alice.say("science", "first")
            await all_arrived(api, receiver)
            resources = server.resources
            async with resources.db.begin() as conn:
                await resources.feed.record(
                    conn, "member_joined", room_id="room_city_science", user_id="u_late", payload={}
                )
                await alice.say("science", "committed before")
                await asyncio.sleep(1.0)
                assert len(receiver.delivered()) == 1  # held behind the open transaction
            events = await all_arrived(api, receiver)
            assert [e["kind"] for e in events] == ["room_message", "member_joined", "room_message"]
            check_order(receiver, events)
            with contextlib.suppress(RuntimeError):
                async with resources.db.begin() as conn:
                    await resources.feed.record(
                        conn, "member_left", room_id="room_city_science", user_id="u_x", payload={}
                    )
                    await alice.say("science", "after a rollback")
                    raise RuntimeError("rolled back")
            events = await all_arrived(api, receiver)
            check_order(receiver, events)
        finally:
            await api.aclose()


async def test_one_sender_in_a_cluster_and_another_takes_over(
    backend: str, settings: Settings, receiver: Receiver
) -> None:
    """Two instances on one PostgreSQL database: their events are sent once each, in feed
    order, by one of them; when it stops the other sends."""
    if backend != "postgresql":
        pytest.skip("one instance on SQLite")
    async with contextlib.AsyncExitStack() as stack, receiver.running():
        a = Api(await stack.enter_async_context(run_server(settings)))
        b_server = await stack.enter_async_context(run_server(settings))
        b = Api(b_server)
        stack.push_async_callback(a.aclose)
        stack.push_async_callback(b.aclose)
        users = [await a.guest("A"), await b.guest("B")]
        for i in range(10):
            await users[i % 2].say("science", f"m{i}")
        events = await all_arrived(a, receiver)
        check_order(receiver, events)

        async def delivered() -> list[float]:
            return [
                value(await scrape(api), "city_webhook_deliveries", result="delivered")
                for api in (a, b)
            ]

        async def all_counted() -> bool:
            return sum(await delivered()) == len(events)

        await eventually(all_counted, 10, "deliveries not counted")
        counts = await delivered()
        assert sorted(counts) == [0, len(events)]
        leader, other = (a, b) if counts[0] else (b, a)
        await leader.server.uvicorn.shutdown()  # its lifespan ends: the lock is let go
        await leader.server.resources.db.dispose()
        await users[1 if other is b else 0].say("science", "after the leader left")
        events = await all_arrived(other, receiver, timeout=20)
        check_order(receiver, events)


async def test_the_sender_is_a_process_of_its_own_restarted_when_killed(
    backend: str, settings: Settings, receiver: Receiver
) -> None:
    """PostgreSQL: the sender runs as the instance's child process; killed (kill -9), it is
    started again and sends what was written meanwhile; it stops with the instance."""
    if backend != "postgresql":
        pytest.skip("SQLite's sender runs in the instance (one writer)")
    async with run_server(settings) as server, receiver.running():
        api = Api(server)
        try:
            sender = server.resources.webhooks
            assert isinstance(sender, WebhookProcess)
            await activity(api, "one")
            before = await all_arrived(api, receiver)

            async def sent_and_forgotten() -> bool:  # else a new child sends some again
                async with server.resources.db.read() as conn:
                    return await outbox.pending(conn) == 0

            await eventually(sent_and_forgotten, 10, "the outbox not emptied")
            await counted(api, "delivered", len(before))  # told within COUNT_EVERY (0.2 s)
            pid = sender.pid
            assert pid is not None
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            await activity(api, "two")  # written while no sender runs
            events = await all_arrived(api, receiver, timeout=30)
            assert sender.pid != pid
            assert sender.starts == 2
            check_order(receiver, events)
            await counted(api, "delivered", len(events))
            last = sender.pid
        finally:
            await api.aclose()
    assert last is not None
    with pytest.raises(ProcessLookupError):
        os.kill(last, 0)  # stopped and reaped with the instance


def test_settings_go_together_and_the_secret_is_masked(tmp_path: Any) -> None:
    base = {"city_data_dir": tmp_path, "city_jwt_secret": "x" * 40}
    for bad in (
        {"city_webhook_url": "http://127.0.0.1:9/h"},
        {"city_webhook_secret": "s"},
        {"city_webhook_url": "ftp://example.org/h", "city_webhook_secret": "s"},
        {"city_webhook_sender": "process"},  # SQLite (the default database)
        {"city_webhook_sender": "elsewhere"},
    ):
        with pytest.raises((ConfigurationError, ValidationError)):
            check_settings(Settings(**base, **bad))
    good = Settings(**base, city_webhook_url="https://example.org/h", city_webhook_secret="s3")
    check_settings(good)
    assert good.webhooks_on
    assert not Settings(**base).webhooks_on
    assert not good.webhook_process  # SQLite: inline
    on_pg = Settings(**base, database_url="postgresql://127.0.0.1/x")
    assert on_pg.webhook_process
    assert not on_pg.model_copy(update={"city_webhook_sender": "inline"}).webhook_process
    shown = good.masked()
    assert shown["city_webhook_secret"] == "********"
    assert shown["city_webhook_retry_hours"] == 24
    assert shown["city_webhook_timeout"] == 10


def test_signatures_verify_and_refuse_what_they_should() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(b"k", body, t=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify("k", header, body, now=1_000_100)
    assert not verify("k", header, body, now=1_000_301)  # older than 300 s
    assert not verify("other", header, body, now=1_000_000)
    assert not verify("k", header, body + b" ", now=1_000_000)
    for broken in (None, "", "t=x,v1=00", "v1=" + header.split("v1=")[1], "t=1000000"):
        assert not verify("k", broken, body, now=1_000_000)
    rotated = header + ",v1=" + "0" * 64
    assert verify("k", rotated, body, now=1_000_000)


def test_the_sender_process_is_given_the_instances_settings(tmp_path: Any) -> None:
    """The child builds ``Settings()`` from the environment it is given: the same settings as
    the instance's, whatever the instance read them from (here: arguments, not the env)."""
    settings = Settings(
        city_data_dir=tmp_path,
        city_jwt_secret="j" * 40,
        database_url="postgresql://127.0.0.1:5432/somewhere",
        city_webhook_url="http://127.0.0.1:9/h",
        city_webhook_secret="s3cret",
        city_webhook_batch=7,
        city_webhook_order_wait=0.5,
        city_default_rooms="general,science",
        log_level="warning",
    )
    code = (
        "from daarion_city.config import Settings; s = Settings(); "
        "print(s.model_dump_json()); print(s.city_webhook_secret.get_secret_value())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(settings),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert orjson.loads(out[0]) == orjson.loads(settings.model_dump_json())
    assert out[1] == "s3cret"
