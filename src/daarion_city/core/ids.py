"""Identifiers: prefixed, time-ordered, unguessable strings (``m_0193a1b2c3d4e5f6a7b8c9d0e1f2``)."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A 48-bit millisecond timestamp then 64 random bits, hex, after ``prefix_``."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def new_user_id() -> str:
    return f"u_{secrets.token_hex(8)}"
