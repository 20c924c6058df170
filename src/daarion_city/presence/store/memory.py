"""In-process presence for a single instance: the pure model over a dict."""

from __future__ import annotations

from daarion_city.presence import model
from daarion_city.presence.model import Reported, Transition, UserPresence


class MemoryPresenceStore:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._users: dict[str, UserPresence] = {}

    def _put(self, user_id: str, after: UserPresence | None) -> None:
        if after is None:
            self._users.pop(user_id, None)
        else:
            self._users[user_id] = after

    async def set_online(
        self, user_id: str, name: str, conn_id: str, *, now: float, status: Reported = "online"
    ) -> Transition:
        before = self._users.get(user_id)
        after = model.heartbeat(
            before,
            user_id=user_id,
            name=name,
            conn_id=conn_id,
            status=status,
            now=now,
            ttl=self.ttl,
        )
        self._put(user_id, after)
        return model.transition(user_id, before, after, now)

    refresh_ttl = set_online

    async def disconnect(self, user_id: str, conn_id: str, *, now: float) -> Transition:
        before = self._users.get(user_id)
        after = model.disconnect(before, conn_id=conn_id, now=now)
        self._put(user_id, after)
        return model.transition(user_id, before, after, now)

    async def sweep(self, *, now: float, limit: int = 1000) -> list[Transition]:
        changes = []
        due = [u for u, s in self._users.items() if model.next_expiry(s) <= now][:limit]
        for user_id in due:
            before = self._users[user_id]
            after = model.expire(before, now=now)
            self._put(user_id, after)
            change = model.transition(user_id, before, after, now)
            if change.changed:
                changes.append(change)
        return changes

    async def is_online(self, user_id: str) -> bool:
        return user_id in self._users

    async def get(self, user_ids: list[str]) -> dict[str, Transition]:
        out = {}
        for user_id in user_ids:
            state = self._users.get(user_id)
            if state is not None:
                out[user_id] = model.transition(user_id, state, state, state.last_seen)
        return out

    async def get_all_online(self) -> list[Transition]:
        return [model.transition(u, s, s, s.last_seen) for u, s in self._users.items()]

    async def get_online_count(self) -> int:
        return len(self._users)

    async def close(self) -> None:
        self._users.clear()
