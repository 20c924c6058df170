"""Time as a dependency: wall-clock UTC helpers and a monotonic clock that tests can replace."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime (SQLite hands those back) as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z``: ``2026-11-24T22:43:16.123Z``."""
    # isoformat is C; "+00:00" (always, after as_utc) becomes "Z". Twice as fast as strftime,
    # and a page of messages formats one per message.
    return as_utc(value).isoformat(timespec="milliseconds")[:23] + "Z"


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Clock(Protocol):
    """Seconds since the epoch; monotonic enough for TTLs and rate limits."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    return time.time()


class FakeClock:
    """A clock for tests: time moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
