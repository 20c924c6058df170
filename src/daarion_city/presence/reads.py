"""Presence reads: who is online (``GET /city/presence``, from a snapshot), one user's record,
and the statuses the rooms show beside their online members.

The online list is kept as a snapshot (``core/snapshots.py``) that every presence change drops:
on the instance that announces it, before it is published (so the writer of a heartbeat that
changed a status reads it back), and on every other one when its ``presence.update`` arrives on
the bus; after a bus outage, at once. So the list shows what a presence socket has been told.
A record's ``last_seen`` moves with heartbeats that change nothing, which are not announced: in
the list it is as old as the snapshot (at most ``CITY_READ_SNAPSHOT_MAX_AGE``), as it is as old
as the connection's last store write (``refresh_window``) in the store.
"""

from __future__ import annotations

from typing import Any

from daarion_city.core.answers import Encoded
from daarion_city.core.snapshots import Snapshots
from daarion_city.presence.frames import record
from daarion_city.presence.store import PresenceStore


class PresenceReads:
    def __init__(self, store: PresenceStore, snapshots: Snapshots | None = None) -> None:
        self.store = store
        self._online = (
            snapshots if snapshots is not None else Snapshots("presence", capacity=0, max_age=1)
        )

    def changed(self) -> None:
        self._online.invalidate_all()

    async def online_answer(self) -> Encoded:
        return await self._online.get("", None, self.online)

    async def online(self) -> dict[str, Any]:
        users = await self.store.get_all_online()
        return {"online_count": len(users), "users": [record(u) for u in users]}

    async def get(self, user_id: str) -> dict[str, Any]:
        if (found := await self.store.get([user_id])).get(user_id) is not None:
            return record(found[user_id])
        return {"user_id": user_id, "name": user_id, "status": "offline", "last_seen": None}

    async def statuses(self, user_ids: list[str]) -> dict[str, str]:
        found = await self.store.get(user_ids)
        return {u: t.new for u, t in found.items()}
