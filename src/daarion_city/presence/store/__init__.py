"""Presence stores: in-process (one instance) and Redis (a cluster), behind one Protocol."""

from __future__ import annotations

from daarion_city.presence.store.base import PresenceStore
from daarion_city.presence.store.memory import MemoryPresenceStore

__all__ = ["MemoryPresenceStore", "PresenceStore"]
