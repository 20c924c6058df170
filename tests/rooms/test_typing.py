"""Typing notices cost listeners at most one frame per user and room per ``CITY_TYPING_INTERVAL``,
whatever the sender does; the sender's typing frames spend a per-user bucket (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import pytest

from tests.support import Api, Socket

INTERVAL = 0.5


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "city_typing_interval": INTERVAL,
        "city_typing_timeout": 30.0,
        "presence_write_rate": 1_000_000.0,  # the throttle alone, not the sender's bucket
        "presence_write_burst": 1_000_000,
    }


class Listener:
    """Collects the ``room.typing`` frames of one user arriving on a socket."""

    def __init__(self, ws: Socket, user_id: str) -> None:
        self.ws, self.user_id = ws, user_id
        self.states: list[bool] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await self.ws.recv(timeout=3600)
                if frame.get("event") == "room.typing" and frame["user_id"] == self.user_id:
                    self.states.append(frame["typing"])

    async def settle(self, state: bool, within: float = 10.0) -> None:
        """Wait until the last state seen is ``state`` (bounded), then a little longer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.states or self.states[-1] is not state:
            assert loop.time() < deadline, f"last typing state {self.states[-1:]} != {state}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * INTERVAL)

    def stop(self) -> None:
        self._task.cancel()


async def errors_until_pong(ws: Socket) -> list[dict[str, Any]]:
    """The ``error`` frames before the next ``pong`` (the server has handled what was sent)."""
    await ws.send({"event": "ping"})
    errors = []
    while (frame := await ws.recv(timeout=30)).get("event") != "pong":
        if frame.get("event") == "error":
            errors.append(frame)
    return errors


async def toggle(ws: Socket, seconds: float, start: bool = True) -> int:
    """Send typing true/false alternately as fast as the socket takes them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    sent, state = 0, start
    while loop.time() < deadline:
        for _ in range(20):
            await ws.send({"event": "room.typing", "typing": state})
            state = not state
            sent += 1
        await asyncio.sleep(0)
    return sent


async def test_a_typing_flood_costs_a_listener_one_frame_per_interval(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with bob.socket("science") as b, alice.socket("science") as a:
        await b.expect("room.state")
        await b.expect("room.join", user_id=alice.user_id)
        await a.expect("room.state")
        listener = Listener(b, alice.user_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = await toggle(a, 2.5)
        assert sent % 2 == 0  # it ended on false; one more true is the last state
        await a.send({"event": "room.typing", "typing": True})
        assert await errors_until_pong(a) == []  # handled, no error: the throttle is not an error
        flood = loop.time() - started
        await listener.settle(True)
        listener.stop()
        # One frame at the start, then at most one per interval, the last one an interval late.
        assert len(listener.states) <= math.ceil(flood / INTERVAL) + 2, (sent, listener.states)
        assert sent > 10 * len(listener.states)
        assert listener.states[-1] is True  # the latest state won
        # A final false is never lost, only delayed.
        listener = Listener(b, alice.user_id)
        await a.send({"event": "room.typing", "typing": False})
        await listener.settle(False)
        listener.stop()
        assert listener.states == [False]


async def test_the_throttle_holds_across_a_users_sockets(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with (
        bob.socket("science") as b,
        alice.socket("science") as a1,
        alice.socket("science") as a2,
        alice.socket("science") as a3,
    ):
        await b.expect("room.state")
        for a in (a1, a2, a3):
            await a.expect("room.state")
        listener = Listener(b, alice.user_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(toggle(a1, 2.0), toggle(a2, 2.0, False), toggle(a3, 2.0))
        for a in (a1, a2, a3):
            await errors_until_pong(a)
        await a2.send({"event": "room.typing", "typing": False})
        await errors_until_pong(a2)
        flood = loop.time() - started
        await listener.settle(False)
        listener.stop()
        assert len(listener.states) <= math.ceil(flood / INTERVAL) + 2, listener.states


async def test_typing_for_a_person_and_a_message_ends_it(
    api: Api, settings_overrides: dict[str, Any]
) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with bob.socket("science") as b, alice.socket("science") as a:
        await b.expect("room.state")
        await a.expect("room.state")
        await a.send({"event": "room.typing", "typing": True})
        assert (await b.expect("room.typing", user_id=alice.user_id))["typing"] is True
        await a.send({"event": "room.typing", "typing": False})
        assert (await b.expect("room.typing", user_id=alice.user_id))["typing"] is False
        await a.send({"event": "room.typing", "typing": True})
        assert (await b.expect("room.typing", user_id=alice.user_id))["typing"] is True
        # Sending a message ends typing at once: the false follows the message.
        await a.send({"event": "room.message.send", "body": "done"})
        await b.expect("room.message")
        assert (await b.expect("room.typing", user_id=alice.user_id, timeout=2))["typing"] is False
        await b.silent(3 * INTERVAL, ignore=("presence.update",))


@pytest.mark.parametrize(
    "settings_overrides",
    [{"city_typing_interval": 0.1, "city_typing_timeout": 0.5}],
)
async def test_typing_expires_after_the_timeout(api: Api) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    async with bob.socket("science") as b, alice.socket("science") as a:
        await b.expect("room.state")
        await a.expect("room.state")
        await a.send({"event": "room.typing", "typing": True})
        assert (await b.expect("room.typing", user_id=alice.user_id))["typing"] is True
        await a.send({"event": "room.typing", "typing": True})  # no change: not repeated
        expired = await b.expect("room.typing", user_id=alice.user_id, timeout=5)
        assert expired["typing"] is False
        await b.silent(0.5, ignore=("presence.update",))


@pytest.mark.parametrize(
    "settings_overrides",
    [{"city_typing_interval": 0.1, "presence_write_rate": 0.01, "presence_write_burst": 3}],
)
async def test_typing_frames_spend_a_per_user_bucket(api: Api) -> None:
    alice = await api.guest("Alice")
    async with alice.socket("science") as a1, alice.socket("science") as a2:
        await a1.expect("room.state")
        await a2.expect("room.state")
        for state in (True, False, True):
            await a1.send({"event": "room.typing", "typing": state})
        assert await errors_until_pong(a1) == []
        await a1.send({"event": "room.typing", "typing": False})
        (err,) = await errors_until_pong(a1)
        assert err["event"] == "error"
        assert err["code"] == "rate_limited"
        assert err["retry_after"] > 0
        # The bucket is the user's: another socket of theirs finds it spent.
        await a2.send({"event": "room.typing", "typing": True})
        (err,) = await errors_until_pong(a2)
        assert err["code"] == "rate_limited"
        # The sockets stay open and usable.
        await a1.send({"event": "room.message.send", "body": "still here"})
        await a1.expect("room.message.ack")
