"""Full garbage collections run on the server's schedule (core/collector.py), in a process of
their own here since the collector's thresholds are the whole process's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, threading, time, weakref
    from daarion_city.core.collector import FullCollections

    full = []  # the thread of each full collection
    def seen(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full.append(threading.current_thread().name)
    gc.callbacks.append(seen)
    before = gc.get_threshold()

    def grow(n):  # long-lived objects: what made Python run full collections in a storm
        return [[i] for i in range(n)]

    class Node:
        pass

    async def main():
        gc.collect()
        kept = grow(400_000)
        automatic = len(full)  # Python's own schedule: full collections as the heap grew
        del kept
        full.clear()

        collector = FullCollections(0.3)
        collector.take_over()
        task = asyncio.create_task(collector.run())
        kept = grow(400_000)
        during_growth = list(full)

        # Cyclic garbage in the old generation: only a full collection frees it.
        freed = asyncio.Event()
        a, b = Node(), Node()
        a.other, b.other = b, a
        weakref.finalize(a, freed.set)  # on the loop's thread, or Event.set would be unsafe
        gc.collect(1)  # a and b survive into generation 2
        del a, b
        gc.collect(1)
        in_young = freed.is_set()
        began = time.monotonic()
        try:
            await asyncio.wait_for(freed.wait(), 5)
        except TimeoutError:
            pass
        task.cancel()
        collector.give_back()
        return {
            "automatic": automatic,
            "during_growth": during_growth,
            "in_young": in_young,
            "freed_after": time.monotonic() - began if freed.is_set() else None,
            "threads": sorted(set(full)),
            "collections": collector.collections,
            "restored": gc.get_threshold() == before,
        }

    print(json.dumps(asyncio.run(main())))
    """
)


def test_full_collections_wait_for_the_schedule_and_still_free_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout)
    assert result["automatic"] >= 2  # what the default schedule does while the heap grows
    assert result["during_growth"] == []  # none while the collector holds the schedule
    assert result["in_young"] is False  # the cycle was old: young collections left it
    assert result["freed_after"] is not None  # a scheduled full collection freed it
    assert result["threads"] == ["MainThread"]  # on the loop's thread
    assert result["collections"] >= 1
    assert result["restored"] is True  # give_back(): Python's schedule again


def test_a_slow_collection_spaces_the_next_out() -> None:
    from daarion_city.core.collector import FullCollections

    collector = FullCollections(60.0)
    assert collector.next_wait() == 60.0
    collector.last_pause = 0.8  # 0.8 s: the next one 80 s later (1% of the time)
    assert collector.next_wait() == 80.0
