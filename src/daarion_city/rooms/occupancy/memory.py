"""Room occupancy in process, for a single instance (see ``base.py`` for the contract)."""

from __future__ import annotations

from daarion_city.rooms.occupancy.base import Departure


class MemoryRoomOccupancy:
    """Single-instance occupancy kept in process."""

    def __init__(self) -> None:
        self._sockets: dict[str, dict[str, set[str]]] = {}
        self._names: dict[str, dict[str, str]] = {}
        self._rooms_of: dict[str, set[str]] = {}

    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> bool:
        users = self._sockets.setdefault(room_id, {})
        sockets = users.setdefault(user_id, set())
        first = not sockets
        sockets.add(conn_id)
        self._names.setdefault(room_id, {})[user_id] = name
        self._rooms_of.setdefault(user_id, set()).add(room_id)
        return first

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        users = self._sockets.get(room_id)
        if not users or user_id not in users:
            return False
        sockets = users[user_id]
        sockets.discard(conn_id)
        if sockets:
            return False
        del users[user_id]
        self._names.get(room_id, {}).pop(user_id, None)
        rooms = self._rooms_of.get(user_id, set())
        rooms.discard(room_id)
        if not rooms:
            self._rooms_of.pop(user_id, None)
        if not users:
            self._sockets.pop(room_id, None)
            self._names.pop(room_id, None)
        return True

    async def members(self, room_id: str) -> dict[str, str]:
        return dict(self._names.get(room_id, {}))

    async def counts(self, room_ids: list[str]) -> dict[str, int]:
        return {rid: len(self._sockets.get(rid, {})) for rid in room_ids}

    async def rooms_of(self, user_id: str) -> list[str]:
        return sorted(self._rooms_of.get(user_id, ()))

    async def maintain(self, now: float) -> list[Departure]:
        return []

    async def close(self) -> None:
        return None
