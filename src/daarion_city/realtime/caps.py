"""Sockets per user on this instance: room sockets (``CITY_WS_MAX_PER_USER``) and presence sockets
(``PRESENCE_MAX_SOCKETS_PER_USER``) each have a cap; one over it is closed with 4429."""

from __future__ import annotations

from daarion_city.core.errors import CityError
from daarion_city.realtime.closes import CLOSE_TOO_MANY


class TooManySockets(CityError):
    status, code, close_code = 429, "too_many_connections", CLOSE_TOO_MANY


class SocketCap:
    """Counts a kind of socket per user; ``reserve`` before the socket is used, ``release``
    (exactly once per successful ``reserve``) when it is gone."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit = limit
        self.kind = kind
        self._counts: dict[str, int] = {}

    def reserve(self, user_id: str) -> None:
        count = self._counts.get(user_id, 0)
        if count >= self.limit:
            raise TooManySockets(f"at most {self.limit} {self.kind} per user")
        self._counts[user_id] = count + 1

    def release(self, user_id: str) -> None:
        count = self._counts.get(user_id, 0) - 1
        if count > 0:
            self._counts[user_id] = count
        else:
            self._counts.pop(user_id, None)

    def count(self, user_id: str) -> int:
        return self._counts.get(user_id, 0)

    def __len__(self) -> int:
        """How many users hold a socket of this kind."""
        return len(self._counts)
