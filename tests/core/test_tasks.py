"""Owned tasks and shared reads."""

from __future__ import annotations

import asyncio

import pytest

from daarion_city.core.tasks import Batcher, FreshFlight, TaskSet


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


async def test_batcher_groups_the_calls_made_while_a_batch_runs() -> None:
    """The first call runs alone at once; calls that arrive while it runs share the next run
    (at most ``max_batch`` each); each caller gets its own answer or its own exception."""

    runs: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int | BaseException]:
        runs.append(items)
        await gate.wait()
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    tasks = TaskSet("test")
    batcher: Batcher[int, int] = Batcher(run, tasks, name="test", max_batch=3)
    calls = [asyncio.ensure_future(batcher.submit(0))]
    await asyncio.sleep(0)
    calls += [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert runs == [[0], [1, 2, 3], [4, 5]]
    assert results[:3] == [0, 10, 20]
    assert isinstance(results[3], ValueError)
    assert results[4:] == [40, 50]
    await tasks.close()
