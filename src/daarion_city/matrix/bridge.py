"""The presence bridge: every city presence change is mirrored to the user's Matrix puppet.

City ``online`` / ``away`` / ``offline`` become Matrix ``online`` / ``unavailable`` /
``offline``. The bridge listens to the presence service (called once per change, on the instance
that made it) and only records the latest state per user, so city traffic is never held up. A
writer task then sends at most one write per user per ``min_interval`` seconds (default 10): a
burst of changes collapses to the first and the latest. While the homeserver is down, writes are
retried with exponential backoff (up to ``max_backoff``), still with the latest state winning.
Puppets are registered on first use. A homeserver marks a user who never syncs offline some time
after their last presence write (Synapse: 30 s), so the state of every puppet that is not offline
is written again every ``refresh_interval`` seconds (25 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from daarion_city.core.clock import Clock, system_clock
from daarion_city.core.errors import CityError
from daarion_city.core.tasks import TaskSet
from daarion_city.matrix.client import HomeserverClient, HomeserverUnavailable
from daarion_city.matrix.ids import puppet_id, puppet_localpart
from daarion_city.presence.model import Transition

log = logging.getLogger(__name__)

MATRIX_PRESENCE = {"online": "online", "away": "unavailable", "offline": "offline"}


@dataclass
class _UserState:
    wanted: str  # the Matrix presence to reach
    sent: str | None = None  # the last one the homeserver accepted
    sent_at: float = 0.0
    next_at: float = 0.0  # not before this time (rate limit or backoff)
    failures: int = 0


class PresenceBridge:
    def __init__(
        self,
        client: HomeserverClient,
        *,
        server_name: str,
        min_interval: float = 10.0,
        max_backoff: float = 30.0,
        refresh_interval: float = 25.0,
        clock: Clock = system_clock,
    ) -> None:
        self.refresh_interval = refresh_interval
        self.client = client
        self.server_name = server_name
        self.min_interval = min_interval
        self.max_backoff = max_backoff
        self.clock = clock
        self._users: dict[str, _UserState] = {}
        self._registered: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks = TaskSet("matrix-bridge")
        self.writes = 0  # presence writes the homeserver accepted

    async def start(self) -> None:
        self._tasks.spawn(self._run(), name="matrix-bridge-writer")

    async def stop(self) -> None:
        await self._tasks.close()

    async def on_change(self, change: Transition) -> None:
        """Presence listener: record the latest state; never waits on the homeserver."""
        wanted = MATRIX_PRESENCE[change.new]
        state = self._users.get(change.user_id)
        if state is None:
            self._users[change.user_id] = _UserState(wanted)
        else:
            state.wanted = wanted
        self._wake.set()

    def pending(self) -> int:
        return sum(1 for s in self._users.values() if s.wanted != s.sent)

    def _next_write_at(self, s: _UserState) -> float | None:
        """When this user needs a write: a new state, or a refresh of one that is not offline."""
        if s.wanted != s.sent:
            return s.next_at
        if s.wanted != "offline":
            return max(s.next_at, s.sent_at + self.refresh_interval)
        return None

    async def _run(self) -> None:
        while True:
            now = self.clock()
            for user_id, state in list(self._users.items()):
                at = self._next_write_at(state)
                if at is not None and at <= now:
                    await self._write(user_id, state)
            self._forget_idle(self.clock())
            times = [t for s in self._users.values() if (t := self._next_write_at(s)) is not None]
            timeout = max(0.05, min(times) - self.clock()) if times else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _write(self, user_id: str, state: _UserState) -> None:
        wanted = state.wanted
        mxid = puppet_id(user_id, self.server_name)
        try:
            if user_id not in self._registered:
                await self.client.register_puppet(puppet_localpart(user_id))
                self._registered.add(user_id)
            await self.client.set_presence(mxid, wanted)
        except HomeserverUnavailable:
            state.failures += 1
            backoff = min(self.max_backoff, 0.5 * 2 ** (state.failures - 1))
            state.next_at = self.clock() + backoff
            log.warning("homeserver down; presence of %s retried in %.1fs", mxid, backoff)
            return
        except CityError as exc:
            state.failures += 1
            state.next_at = self.clock() + self.min_interval
            log.warning("presence of %s refused by the homeserver: %s", mxid, exc.detail)
            return
        except Exception:  # the writer must outlive any one bad answer
            state.failures += 1
            state.next_at = self.clock() + self.max_backoff
            log.exception("presence of %s could not be written", mxid)
            return
        self.writes += 1
        log.debug("presence of %s is %s on the homeserver", mxid, wanted)
        state.sent = wanted
        state.sent_at = self.clock()
        state.failures = 0
        state.next_at = self.clock() + self.min_interval

    def _forget_idle(self, now: float) -> None:
        """Drop users who are offline on both sides and past their rate-limit window."""
        for user_id, s in list(self._users.items()):
            if s.sent == s.wanted == "offline" and s.next_at < now:
                del self._users[user_id]
