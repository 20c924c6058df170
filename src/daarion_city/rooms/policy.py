"""A room's policy as every instance enforces it: who owns and moderates it, its slow mode, and
the bans and mutes in force (SPEC section 10).

Each instance keeps each room's policy in memory (``Policies``), read once from the database on
first use, so a post by a user without a sanction costs no round trip for its checks. A change
drops the room's policy on every instance through the bus channel ``city:moderation`` (dropped
here before the change is answered); a notice that a user is expelled from a room (banned,
kicked) also closes their sockets of that room with 4403 on every instance. A load that started
before a change is never kept. Bans and mutes end by themselves: each carries its end, checked at
use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from daarion_city.core.clock import utcnow
from daarion_city.core.errors import NotFound, RateLimited, Sanctioned
from daarion_city.identity.principal import Principal
from daarion_city.pubsub import PubSub
from daarion_city.ratelimit import RateLimiter
from daarion_city.rooms.powers import Rank
from daarion_city.storage import moderation as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

NOTICES = "city:moderation"


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    owner: str | None
    moderators: frozenset[str]
    slow_mode_s: int
    bans: dict[str, datetime | None] = field(default_factory=dict)
    mutes: dict[str, datetime | None] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()

    def rank(self, user: Principal) -> Rank:
        return Rank.ADMIN if user.admin else self.rank_of(user.user_id)

    def rank_of(self, user_id: str) -> Rank:
        """The rank of a user who is not the caller (their token's admin claim unknown here)."""
        if user_id in self.admins:
            return Rank.ADMIN
        if user_id == self.owner:
            return Rank.OWNER
        return Rank.MODERATOR if user_id in self.moderators else Rank.MEMBER

    def sanction(self, kind: str, user_id: str, now: datetime) -> tuple[bool, datetime | None]:
        """Whether a ban or mute of the user is in force, and its end."""
        table = self.bans if kind == "ban" else self.mutes
        if user_id not in table:
            return False, None
        end = table[user_id]
        return end is None or end > now, end

    def check_banned(self, user: Principal) -> None:
        banned, end = self.sanction("ban", user.user_id, utcnow())
        if banned:
            raise Sanctioned("banned", "you are banned from this room", end)

    def check_voice(self, user: Principal) -> None:
        """May the user post, edit or react here: 403 ``banned`` or ``muted``."""
        if not self.bans and not self.mutes:
            return
        self.check_banned(user)
        muted, end = self.sanction("mute", user.user_id, utcnow())
        if muted:
            raise Sanctioned("muted", "you are muted in this room", end)


Expel = Callable[[str, str, str], None]  # (room_id, user_id, code): close their sockets there


class Policies:
    def __init__(
        self, db: Database, bus: PubSub, admins: frozenset[str], limiter: RateLimiter
    ) -> None:
        self.db = db
        self.bus = bus
        self.admins = admins
        self.limiter = limiter
        self._kept: dict[str, RoomPolicy] = {}
        self._generation: dict[str, int] = {}
        self._loads: dict[str, asyncio.Future[RoomPolicy]] = {}
        self.on_expel: Expel | None = None

    async def start(self) -> None:
        self.bus.add_reconnect_listener(self._after_outage)
        await self.bus.subscribe(NOTICES, self._on_notice)

    async def stop(self) -> None:
        await self.bus.unsubscribe(NOTICES, self._on_notice)

    async def admit(self, room_id: str, user: Principal) -> None:
        """May the user post a new message in the room now: not banned nor muted (403), and
        within the room's slow mode unless a moderator (429 ``slow_mode``). From memory, but
        for the slow mode's bucket."""
        policy = await self.of(room_id)
        policy.check_voice(user)
        if policy.slow_mode_s and policy.rank(user) < Rank.MODERATOR:
            try:
                await self.limiter.hit(
                    f"slow:{room_id}:{user.user_id}", rate=1 / policy.slow_mode_s, burst=1
                )
            except RateLimited as exc:
                slowed = RateLimited(
                    exc.retry_after, f"slow mode: one message per {policy.slow_mode_s} s"
                )
                slowed.code = "slow_mode"
                raise slowed from None

    async def of(self, room_id: str) -> RoomPolicy:
        kept = self._kept.get(room_id)
        if kept is not None:
            return kept
        load = self._loads.get(room_id)
        if load is None:
            load = asyncio.ensure_future(self._load(room_id, self._generation.get(room_id, 0)))
            self._loads[room_id] = load
            load.add_done_callback(lambda _: self._loads.pop(room_id, None))
        return await asyncio.shield(load)

    async def _load(self, room_id: str, generation: int) -> RoomPolicy:
        async with self.db.read() as conn:
            rows = await store.policy_rows(conn, room_id, utcnow())
        if rows is None:
            raise NotFound(f"no room {room_id!r}", code="room_not_found")
        policy = RoomPolicy(
            rows.owner,
            frozenset(rows.moderators),
            rows.slow_mode_s,
            {u: end for kind, u, end in rows.sanctions if kind == "ban"},
            {u: end for kind, u, end in rows.sanctions if kind == "mute"},
            self.admins,
        )
        if self._generation.get(room_id, 0) == generation:  # no change since the load began
            self._kept[room_id] = policy
        return policy

    def changed(self, room_id: str) -> None:
        self._kept.pop(room_id, None)
        self._loads.pop(room_id, None)
        self._generation[room_id] = self._generation.get(room_id, 0) + 1

    async def announce(self, room_id: str, expel: tuple[str, str] | None = None) -> None:
        """After a committed change: dropped here, then on every instance; ``expel`` =
        ``(user_id, code)`` closes that user's sockets of the room everywhere."""
        self.changed(room_id)
        notice = {"room_id": room_id, "expel": expel}
        try:
            await self.bus.publish(NOTICES, orjson.dumps(notice))
        except Exception:
            log.warning("moderation notice of %s not published", room_id, exc_info=True)
            if expel is not None and self.on_expel is not None:  # at least here
                self.on_expel(room_id, *expel)

    def _on_notice(self, data: bytes) -> None:
        notice = orjson.loads(data)
        self.changed(notice["room_id"])
        if notice["expel"] is not None and self.on_expel is not None:
            self.on_expel(notice["room_id"], *notice["expel"])

    async def _after_outage(self) -> None:
        for room_id in list(self._kept):
            self.changed(room_id)
