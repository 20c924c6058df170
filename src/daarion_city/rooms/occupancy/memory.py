"""Room occupancy in process, for a single instance (see ``base.py`` for the contract)."""

from __future__ import annotations

import itertools

from daarion_city.rooms.occupancy.base import Crowd, Departure, Occupied, Roster, crosses


class MemoryRoomOccupancy:
    """Single-instance occupancy kept in process."""

    def __init__(self, large_room: int = 200) -> None:
        self.large_room = large_room
        self._sockets: dict[str, dict[str, set[str]]] = {}
        # room -> user -> name, in order of activity (the most recently active last)
        self._names: dict[str, dict[str, str]] = {}
        self._rooms_of: dict[str, set[str]] = {}
        self._large: set[str] = set()

    def _mode(self, room_id: str, changed: bool) -> Occupied:
        online = len(self._sockets.get(room_id, {}))
        large = room_id in self._large
        flip = crosses(online, large, self.large_room)
        if flip is not None:
            (self._large.add if flip else self._large.discard)(room_id)
        return Occupied(changed, online, large if flip is None else flip, flip is not None)

    async def add(self, room_id: str, user_id: str, name: str, conn_id: str) -> Occupied:
        users = self._sockets.setdefault(room_id, {})
        sockets = users.setdefault(user_id, set())
        first = not sockets
        sockets.add(conn_id)
        names = self._names.setdefault(room_id, {})
        names.pop(user_id, None)
        names[user_id] = name  # the most recently active last
        self._rooms_of.setdefault(user_id, set()).add(room_id)
        return self._mode(room_id, first)

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> Occupied:
        users = self._sockets.get(room_id)
        if not users or user_id not in users:
            return self._mode(room_id, False)
        sockets = users[user_id]
        sockets.discard(conn_id)
        if sockets:
            return self._mode(room_id, False)
        del users[user_id]
        self._names.get(room_id, {}).pop(user_id, None)
        rooms = self._rooms_of.get(user_id, set())
        rooms.discard(room_id)
        if not rooms:
            self._rooms_of.pop(user_id, None)
        if not users:
            self._sockets.pop(room_id, None)
            self._names.pop(room_id, None)
        return self._mode(room_id, True)

    async def members(self, room_id: str) -> dict[str, str]:
        return dict(self._names.get(room_id, {}))

    async def roster(self, room_id: str, limit: int) -> Roster:
        names = self._names.get(room_id, {})
        newest = list(itertools.islice(reversed(names.items()), limit))
        return Roster(len(names), room_id in self._large, newest)

    async def counts(self, room_ids: list[str]) -> dict[str, int]:
        return {rid: len(self._sockets.get(rid, {})) for rid in room_ids}

    async def crowds(self, room_ids: list[str]) -> dict[str, Crowd]:
        return {rid: Crowd(len(self._sockets.get(rid, {})), rid in self._large) for rid in room_ids}

    async def rooms_of(self, user_id: str) -> list[str]:
        return sorted(self._rooms_of.get(user_id, ()))

    async def heal(self) -> list[Departure]:
        return []

    async def maintain(self, now: float) -> list[Departure]:
        return []

    async def close(self) -> None:
        return None
