"""Read snapshots: loaded once for every reader, kept until their group changes, never kept
when the change came while they were loading, bounded in number and in age."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from daarion_city.core.answers import Encoded
from daarion_city.core.snapshots import Snapshots


class Source:
    """What the loads read: a value that changes, and a gate that holds loads open."""

    def __init__(self) -> None:
        self.value = 0
        self.loads = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def load(self) -> dict[str, Any]:
        self.loads += 1
        seen = self.value
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return {"value": seen}


def value(encoded: Encoded) -> int:
    result: int = orjson.loads(encoded.body)["value"]
    return result


async def test_readers_share_one_load_and_then_the_snapshot() -> None:
    source, snapshots = Source(), Snapshots("t", capacity=10, max_age=60)
    source.gate = asyncio.Event()
    readers = [asyncio.ensure_future(snapshots.get("g", "k", source.load)) for _ in range(20)]
    await source.started.wait()
    source.gate.set()
    answers = await asyncio.gather(*readers)
    assert source.loads == 1
    assert {a.tag for a in answers} == {answers[0].tag}
    again = await snapshots.get("g", "k", source.load)
    assert again is answers[0]  # the same bytes and tag, not encoded again
    assert source.loads == 1
    assert again.tag == Encoded.of({"value": 0}).tag


async def test_a_change_drops_its_group_only() -> None:
    source, snapshots = Source(), Snapshots("t", capacity=10, max_age=60)
    await snapshots.get("room-a", 1, source.load)
    await snapshots.get("room-b", 1, source.load)
    source.value = 1
    snapshots.invalidate("room-a")
    assert value(await snapshots.get("room-a", 1, source.load)) == 1
    assert value(await snapshots.get("room-b", 1, source.load)) == 0  # untouched
    snapshots.invalidate_all()
    assert value(await snapshots.get("room-b", 1, source.load)) == 1


async def test_a_load_that_a_change_overtook_never_becomes_the_snapshot() -> None:
    source, snapshots = Source(), Snapshots("t", capacity=10, max_age=60)
    source.gate = asyncio.Event()
    early = asyncio.ensure_future(snapshots.get("g", "k", source.load))
    await source.started.wait()  # the load has read value 0 ...
    source.value = 1  # ... then a change commits, and its writer drops the group
    snapshots.invalidate("g")
    late = asyncio.ensure_future(snapshots.get("g", "k", source.load))  # asked after the change
    source.gate.set()
    assert value(await early) == 0  # asked before the change: may see the state before it
    assert value(await late) == 1  # asked after: a load of its own, never the old one
    assert source.loads == 2
    assert value(await snapshots.get("g", "k", source.load)) == 1
    assert source.loads == 2


async def test_a_failed_load_is_not_kept() -> None:
    snapshots = Snapshots("t", capacity=10, max_age=60)
    calls = 0

    async def failing() -> Any:
        nonlocal calls
        calls += 1
        raise LookupError("no such thing")

    for _ in range(2):
        with pytest.raises(LookupError):
            await snapshots.get("g", "k", failing)
    assert calls == 2
    assert len(snapshots) == 0


async def test_snapshots_are_bounded_in_number_and_age() -> None:
    now = [0.0]
    source = Source()
    snapshots = Snapshots("t", capacity=2, max_age=5, clock=lambda: now[0])
    for key in ("a", "b", "a", "c"):  # "a" read again: "b" is the least recently read
        await snapshots.get("g", key, source.load)
    assert source.loads == 3
    assert len(snapshots) == 2
    await snapshots.get("g", "a", source.load)
    assert source.loads == 3
    await snapshots.get("g", "b", source.load)  # dropped: loaded again
    assert source.loads == 4
    now[0] = 5.0  # as old as allowed: loaded again
    source.value = 7
    assert value(await snapshots.get("g", "b", source.load)) == 7
    assert source.loads == 5


async def test_no_capacity_means_every_read_loads() -> None:
    source, snapshots = Source(), Snapshots("t", capacity=0, max_age=60)
    for _ in range(3):
        await snapshots.get("g", "k", source.load)
    assert source.loads == 3
    assert len(snapshots) == 0
