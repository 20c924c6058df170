"""The presence store Protocol.

The original design's names are kept (``set_online``, ``is_online``, ``get_all_online``,
``get_online_count``, ``refresh_ttl``); the store also applies the other events of the state
machine (``disconnect``, ``sweep``). Guarantees:

- every write is atomic per user and returns the :class:`Transition` it caused, so that the
  caller announces a change exactly once, even with several instances writing;
- ``sweep(now)`` expires the connections whose TTL ran out and returns each resulting change
  once across all instances sweeping at the same time;
- listing and counting never scan the whole key space;
- a connection lives for the store's TTL from its last ``set_online``/``refresh_ttl``; the user
  is online while any live connection reports online, away while every one reports away, and
  offline without one (``presence/model.py``). ``disconnect`` takes effect at once; disconnecting
  an unknown connection changes nothing. ``sweep`` takes at most ``limit`` due users a call and
  returns only the changes;
- between a connection's expiry and the sweep that expires it, reads may still show the user
  (in process, and the Redis count) or no longer (a Redis record expires by itself at the TTL):
  what is announced is the sweep's change, once;
- in Redis every key expires by itself (the record at its last connection's expiry, the
  connection hash and the index a grace period later), so nothing stays once no instance runs;
- Redis down: every call but ``close`` raises :class:`~daarion_city.core.errors.Unavailable`
  (a typed
  503), never a 500 or a hang.
"""

from __future__ import annotations

from typing import Protocol

from daarion_city.presence.model import Reported, Transition


class PresenceStore(Protocol):
    async def set_online(
        self, user_id: str, name: str, conn_id: str, *, now: float, status: Reported = "online"
    ) -> Transition:
        """A connection opened (or heartbeats): it is live for the TTL from ``now``."""
        ...

    async def refresh_ttl(
        self, user_id: str, name: str, conn_id: str, *, now: float, status: Reported = "online"
    ) -> Transition:
        """A heartbeat: the connection's TTL starts again, with the status it reports."""
        ...

    async def disconnect(self, user_id: str, conn_id: str, *, now: float) -> Transition:
        """A connection closed: it no longer counts, at once."""
        ...

    async def sweep(self, *, now: float, limit: int = 1000) -> list[Transition]:
        """Expire what ran out by ``now``; the changes it caused (each returned once)."""
        ...

    async def is_online(self, user_id: str) -> bool:
        """Online or away (not offline)."""
        ...

    async def get(self, user_ids: list[str]) -> dict[str, Transition]:
        """The current state of those of ``user_ids`` who are not offline."""
        ...

    async def get_all_online(self) -> list[Transition]:
        """Every user who is not offline."""
        ...

    async def get_online_count(self) -> int: ...

    async def close(self) -> None: ...
