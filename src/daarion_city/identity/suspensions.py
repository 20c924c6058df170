"""Instance-wide suspensions (SPEC section 10 and 12): a suspended user's every authenticated call
answers 403 ``suspended`` (``GET /city/me`` and their own data stay open to them), and their
sockets close with an ``error`` ``suspended``, then 4403, on every instance.

Every instance keeps the suspensions in force in memory (a few rows), so the check costs no round
trip. A change is told on the bus channel ``city:suspensions``; every instance also reads the
table again every ``refresh`` seconds, which brings in what the CLI changed (it may run where no
bus is) and ends the suspensions that expired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.errors import Forbidden, NotFound, Sanctioned
from daarion_city.core.provided import Key
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.pubsub import PubSub
from daarion_city.storage import moderation as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

NOTICES = "city:suspensions"
Expel = Callable[[str, str], None]
"""Closes a user's sockets on this instance: ``(user_id, why)``, ``why`` being ``suspended``
(an ``error`` ``suspended``, then 4403) or ``erased`` (an ``error`` ``unauthorized``, then 4401:
identity/retirements.py)."""


class Suspensions:
    def __init__(
        self, db: Database, bus: PubSub, *, admins: frozenset[str], refresh: float = 5.0
    ) -> None:
        self.db = db
        self.bus = bus
        self.admins = admins
        self.refresh = refresh
        self._ends: dict[str, datetime | None] = {}
        self.expellers: list[Expel] = []
        self._tasks = TaskSet("suspensions")

    async def start(self) -> None:
        await self.load()
        await self.bus.subscribe(NOTICES, self._on_notice)
        self._tasks.every(self.refresh, self.load, name="suspensions")

    async def stop(self) -> None:
        await self.bus.unsubscribe(NOTICES, self._on_notice)
        await self._tasks.close()

    async def load(self) -> None:
        async with self.db.read() as conn:
            ends = await store.suspended(conn, utcnow())
        for user_id in ends.keys() - self._ends.keys():
            self._expel(user_id)  # suspended elsewhere (the CLI), learnt here now
        self._ends = ends

    def end_of(self, user_id: str) -> tuple[bool, datetime | None]:
        """Whether the user is suspended now, and until when (None: until lifted)."""
        if user_id not in self._ends:
            return False, None
        end = self._ends[user_id]
        return end is None or end > utcnow(), end

    def check(self, user_id: str) -> None:
        """403 ``suspended`` (with ``expires_at``) for a suspended user."""
        suspended, end = self.end_of(user_id)
        if suspended:
            raise Sanctioned("suspended", "your account is suspended", end)

    async def suspend(
        self, actor: Principal, user_id: str, *, duration_s: int | None, reason: str | None
    ) -> dict[str, Any]:
        self._authorize(actor, user_id)
        now = utcnow()
        end = None if duration_s is None else now + timedelta(seconds=duration_s)
        row = {
            "user_id": user_id,
            "by_user": actor.user_id,
            "reason": reason,
            "created_at": now,
            "expires_at": end,
        }
        async with self.db.begin() as conn:
            await store.put_suspension(conn, row)
            details = {"duration_s": duration_s}
            entry = store.audit_row(
                None,
                "suspend",
                actor.user_id,
                target_user_id=user_id,
                reason=reason,
                details=details,
            )
            await store.insert_audit(conn, entry)
        self._ends[user_id] = end
        self._expel(user_id)
        await self._announce({"user_id": user_id, "end": None if end is None else iso(end)})
        return {
            "user_id": user_id,
            "by": actor.user_id,
            "reason": reason,
            "created_at": iso(now),
            "expires_at": None if end is None else iso(end),
        }

    async def unsuspend(self, actor: Principal, user_id: str) -> None:
        self._authorize(actor, user_id)
        async with self.db.begin() as conn:
            lifted = await store.lift_suspension(conn, user_id, utcnow())
            if lifted:
                entry = store.audit_row(None, "unsuspend", actor.user_id, target_user_id=user_id)
                await store.insert_audit(conn, entry)
        if not lifted:
            raise NotFound(f"{user_id} is not suspended", code="not_suspended")
        self._ends.pop(user_id, None)
        await self._announce({"user_id": user_id, "lifted": True})

    def _authorize(self, actor: Principal, user_id: str) -> None:
        if not actor.admin:
            raise Forbidden("suspensions are for admins")
        if user_id in self.admins or user_id == actor.user_id:
            raise Forbidden("not on an admin")

    async def _announce(self, notice: dict[str, Any]) -> None:
        try:
            await self.bus.publish(NOTICES, orjson.dumps(notice))
        except Exception:
            log.warning("suspension notice not published (read again within %ss)", self.refresh)

    def _on_notice(self, data: bytes) -> None:
        notice = orjson.loads(data)
        user_id = notice["user_id"]
        if notice.get("lifted"):
            self._ends.pop(user_id, None)
            return
        end = notice["end"]
        known = user_id in self._ends
        self._ends[user_id] = None if end is None else datetime.fromisoformat(end)
        if not known:
            self._expel(user_id)

    def _expel(self, user_id: str) -> None:
        for expel in self.expellers:
            try:
                expel(user_id, "suspended")
            except Exception:
                log.warning("sockets of suspended %s not closed", user_id, exc_info=True)


SUSPENSIONS: Key[Suspensions] = Key("suspensions")
