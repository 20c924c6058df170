"""The server's WebSocket protocol pieces (realtime/transport.py): its receive queue and its
write flag keep ``asyncio.Queue``'s and ``asyncio.Event``'s semantics."""

from __future__ import annotations

import asyncio

from daarion_city.realtime.transport import Flag, Inbox


async def test_inbox_is_fifo_and_wakes_its_consumer() -> None:
    inbox = Inbox()
    assert inbox.empty()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait("connect")
    inbox.put_nowait("receive")
    assert await asyncio.wait_for(waiting, 1) == "connect"
    assert await asyncio.wait_for(inbox.get(), 1) == "receive"


async def test_inbox_loses_nothing_when_its_consumer_is_cancelled() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("disconnect")  # wakes the consumer ...
    waiting.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert await asyncio.wait_for(inbox.get(), 1) == "disconnect"
    cancelled = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    inbox.put_nowait("later")  # a waiter that was cancelled is not handed anything
    assert await asyncio.wait_for(inbox.get(), 1) == "later"


async def test_flag_holds_writers_until_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    writers = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in writers)
    writers[0].cancel()
    flag.set()
    results = await asyncio.gather(*writers, return_exceptions=True)
    assert results[1:] == [True, True]
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 1) is True
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0.01)
    assert not late.done()
    flag.set()
    assert await asyncio.wait_for(late, 1) is True
