"""Redis answers are bytes (or str, per client options): one place to turn them into text."""

from __future__ import annotations


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
