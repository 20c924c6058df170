"""Owned tasks and shared reads."""

from __future__ import annotations

import asyncio

import pytest

from daarion_city.tasks import FreshFlight


async def test_a_shared_read_always_starts_after_its_caller_asked() -> None:
    version = 0
    reads: list[int] = []
    gate = asyncio.Event()
    started = asyncio.Event()

    async def read(key: str) -> int:
        seen = version  # what the read observes when it starts
        reads.append(seen)
        started.set()
        await gate.wait()
        return seen

    flight = FreshFlight(read)
    first = asyncio.ensure_future(flight.get("room"))
    await started.wait()
    # A write, then more callers while the first read runs: they must not get that read.
    version = 1
    later = [asyncio.ensure_future(flight.get("room")) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1] * 50
    assert reads == [0, 1]  # fifty-one callers, two reads
    assert await flight.get("room") == 1  # idle: a caller starts its own read
    assert len(reads) == 3


async def test_a_failed_read_fails_its_callers_only() -> None:
    calls = 0

    async def read(key: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise RuntimeError("store away")
        return key

    flight = FreshFlight(read)
    with pytest.raises(RuntimeError):
        await flight.get("a")
    assert await flight.get("a") == "a"
