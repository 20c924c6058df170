"""Typing notices: a throttled, expiring, ephemeral state per (room, user), never stored.

What a sender asks for is its *wanted* state; what the room was told is the *announced* one.
The announced state of a (room, user) changes at most once per ``CITY_TYPING_INTERVAL``: a
change asked for sooner waits for the end of the interval, and the state wanted then is
announced (latest wins, so a final ``true`` or ``false`` is never lost, only delayed; a toggle
that is back where it started by then announces nothing). This is Slack's and Discord's
typing indicator: a listener gets at most one ``room.typing`` per user and room per interval,
however fast the sender toggles and from however many of its sockets on this instance.

A wanted ``true`` expires ``CITY_TYPING_TIMEOUT`` after the last ``true`` asked for (a client
repeats it while its user types). A message from the user, or the close of their last socket
in the room, ends typing at once (``clear``): the ``false`` follows the message without
waiting, and starts a new interval. So the only extra frame a sender can cause is one ``false``
per message they send, and messages are rate-limited and cost listeners a frame each anyway.

Every ``room.typing`` frame a user sends also takes a token from their own bucket (the rate
and burst of presence writes, ``PRESENCE_WRITE_RATE`` / ``PRESENCE_WRITE_BURST``): past it the
socket gets an ``error`` ``rate_limited`` with ``retry_after`` and stays open. The bucket and the
throttle live in this process: a frame costs work only on the instance that receives it, and
checking them takes no round trip. A user with sockets in the same room on several instances
is throttled by each of them (at most one frame per interval per such instance).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from daarion_city.core.errors import RateLimited
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.ratelimit import MemoryRateLimiter
from daarion_city.realtime.hub import RoomHub
from daarion_city.realtime.protocol import encode

log = logging.getLogger(__name__)

_Key = tuple[str, str]  # (room_id, user_id)


@dataclass(slots=True)
class _Typist:
    user: Principal
    wanted: bool = False
    announced: bool = False
    cooldown: asyncio.TimerHandle | None = None  # the end of the interval since the last change
    expiry: asyncio.TimerHandle | None = None  # the timeout of a wanted true
    sending: asyncio.Task[None] | None = None  # the last announcement, so they go out in order


class RoomTyping:
    """Typing state of the rooms' users on this instance, and its announcements."""

    def __init__(
        self,
        hub: RoomHub,
        tasks: TaskSet,
        *,
        interval: float,
        timeout: float,
        rate: float,
        burst: int,
    ) -> None:
        self.hub = hub
        self.interval = interval
        self.timeout = timeout
        self.rate = rate
        self.burst = burst
        self._tasks = tasks
        self._typists: dict[_Key, _Typist] = {}
        self._buckets = MemoryRateLimiter()

    def set(self, room_id: str, user: Principal, typing: bool) -> None:
        """A ``room.typing`` frame from one of the user's sockets. Raises ``RateLimited``."""
        wait = self._buckets.wait(user.user_id, rate=self.rate, burst=self.burst)
        if wait > 0:
            raise RateLimited(wait, "typing notices too often")
        key = (room_id, user.user_id)
        typist = self._typists.get(key)
        if typist is None:
            if not typing:
                return  # nothing was announced, nothing is wanted
            typist = self._typists[key] = _Typist(user)
        typist.wanted = typing
        if typist.expiry is not None:
            typist.expiry.cancel()
            typist.expiry = None
        if typing:
            typist.expiry = asyncio.get_running_loop().call_later(self.timeout, self._expire, key)
        if typist.cooldown is None:
            self._settle(key, typist)

    def clear(self, room_id: str, user: Principal) -> None:
        """The user sent a message, or their last socket in the room closed: not typing, now."""
        key = (room_id, user.user_id)
        typist = self._typists.get(key)
        if typist is None:
            return
        typist.wanted = False
        if typist.expiry is not None:
            typist.expiry.cancel()
            typist.expiry = None
        if typist.announced:
            if typist.cooldown is not None:
                typist.cooldown.cancel()
                typist.cooldown = None
            self._settle(key, typist)
        # Otherwise a true waiting for its interval is dropped when the interval ends.

    def _expire(self, key: _Key) -> None:
        typist = self._typists.get(key)
        if typist is None:
            return
        typist.expiry = None
        typist.wanted = False
        if typist.cooldown is None:
            self._settle(key, typist)

    def _end_of_interval(self, key: _Key) -> None:
        typist = self._typists.get(key)
        if typist is None:
            return
        typist.cooldown = None
        self._settle(key, typist)

    def _settle(self, key: _Key, typist: _Typist) -> None:
        """Outside an interval: announce the wanted state if it differs, and start an interval;
        forget a typist with nothing announced and nothing wanted."""
        if typist.wanted == typist.announced:
            if not typist.announced:
                del self._typists[key]
            return
        typist.announced = typist.wanted
        typist.cooldown = asyncio.get_running_loop().call_later(
            self.interval, self._end_of_interval, key
        )
        typist.sending = self._tasks.spawn(
            self._announce(key[0], typist.user, typist.announced, typist.sending),
            name="typing",
        )

    async def _announce(
        self, room_id: str, user: Principal, typing: bool, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        frame = encode(
            {
                "event": "room.typing",
                "room_id": room_id,
                "user_id": user.user_id,
                "name": user.name,
                "typing": typing,
            }
        )
        try:
            await self.hub.publish_event(room_id, frame, exclude_user=user.user_id)
        except Exception:  # ephemeral: a lost notice is corrected by the next or the timeout
            log.warning("publishing a typing notice failed", exc_info=True)

    def stop(self) -> None:
        for typist in self._typists.values():
            for handle in (typist.cooldown, typist.expiry):
                if handle is not None:
                    handle.cancel()
        self._typists.clear()
