"""Webhooks (SPEC 11): every feed event POSTed to ``CITY_WEBHOOK_URL``, in feed order, at least
once, from the outbox the events are written with (``storage/webhooks.py``).

One sender at a time: on PostgreSQL the holder of an advisory lock, on a connection that also
carries its reads and deletes (so a sender that lost its connection, and with it the lock,
stops at its next statement); another instance takes over within ``LOCK_RETRY`` seconds. It
reads the outbox in ``pos`` order, ``CITY_WEBHOOK_BATCH`` events at a time, each as the feed
shows it now, and POSTs them one after the other; the head of the queue holds back the rest
until it is delivered (a 2xx within ``CITY_WEBHOOK_TIMEOUT``) or given up. A failed attempt
is retried after ``min(max_backoff, 2^(n-1))`` seconds, a random half of it taken off (the
first retry within a second); ``CITY_WEBHOOK_RETRY_HOURS`` after its first attempt an event
that still fails is dropped, counted and logged.

Order on PostgreSQL: positions are taken before commit, so a transaction can commit after one
holding a higher position. A missing position right after the last one sent holds the queue
for up to ``CITY_WEBHOOK_ORDER_WAIT`` seconds (the gap of a transaction still running closes
when it commits); a gap that lasts longer (a rollback, an event written with webhooks off) is
passed, and an event that commits later still is delivered when it appears, after higher ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from daarion_city.config import Settings
from daarion_city.core.clock import as_utc, utcnow
from daarion_city.core.logs import mask_url
from daarion_city.core.tasks import TaskSet
from daarion_city.feed.hookclient import HookClient, HookError
from daarion_city.feed.schemas import event_wire
from daarion_city.feed.signing import EVENT_ID_HEADER, HEADER, sign
from daarion_city.storage import webhooks as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

LOCK_RETRY = 5.0  # seconds between a waiting instance's tries of the sender's lock
GAP_POLL = 0.02  # seconds between looks while a gap in the positions may still close
# Seconds after a batch that was not full before the next look: while posts trickle in, one
# read and one delete serve many events (not one pair per commit) for at most this latency.
LINGER = 0.05


class WebhookSender:
    def __init__(self, db: Database, settings: Settings, count: Callable[[str], None]) -> None:
        """``count`` is called with each attempt's result: delivered, failed or dropped."""
        assert settings.city_webhook_secret is not None
        self.db = db
        self.url = settings.city_webhook_url
        self._secret = settings.city_webhook_secret.get_secret_value().encode()
        self.timeout = settings.city_webhook_timeout
        self.window = timedelta(hours=settings.city_webhook_retry_hours)
        self.max_backoff = settings.city_webhook_max_backoff
        self.batch = settings.city_webhook_batch
        self.poll = settings.city_webhook_poll
        self.order_wait = 0.0 if db.is_sqlite else settings.city_webhook_order_wait
        self._count = count
        self._wake = asyncio.Event()
        self._tasks = TaskSet("webhooks")
        self._client = HookClient(self.url)
        self._last: int | None = None  # the last position sent or passed while leading
        self._gap: tuple[int, float] | None = None  # (last position, since) of a gap seen

    def wake(self, _events: object = None) -> None:
        """Events were committed (the feed's listener, on every instance)."""
        self._wake.set()

    async def start(self) -> None:
        self._tasks.spawn(self._run(), name="webhooks-send")
        log.info("webhooks on: feed events are POSTed to %s", mask_url(self.url))

    async def stop(self) -> None:
        await self._tasks.close()
        self._client.close()

    # --- leading ------------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                led = await self._lead()
                failures = 0
                pause = LOCK_RETRY if not led else 0.0
            except Exception:
                failures += 1
                pause = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("webhook sender failed; again in %.1fs", pause, exc_info=True)
            await asyncio.sleep(pause)

    async def _lead(self) -> bool:
        """Send while this instance holds the lock; False when another one holds it."""
        if self.db.is_sqlite:
            await self._send(None)
            return True
        async with self.db.autocommit() as conn:
            if not await store.try_lock(conn):
                return False
            try:
                await self._send(conn)
            finally:
                try:
                    await store.unlock(conn)
                except BaseException:  # the pool must not keep a connection that holds it
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                    raise
        return True

    @contextlib.asynccontextmanager
    async def _conn(self, locked: AsyncConnection | None, write: bool) -> AsyncIterator[Any]:
        if locked is not None:  # PostgreSQL: every statement on the lock's connection
            yield locked
        else:
            async with self.db.begin() if write else self.db.read() as conn:
                yield conn

    async def _send(self, locked: AsyncConnection | None) -> None:
        self._last, self._gap = None, None
        while True:
            self._wake.clear()
            wait, wakeable = await self._round(locked)
            if wait <= 0:
                continue
            if not wakeable:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    # --- one batch ----------------------------------------------------------------------------
    async def _round(self, locked: AsyncConnection | None) -> tuple[float, bool]:
        """Send what is due of the next batch; how long to wait before the next round, and
        whether a commit may end the wait."""
        async with self._conn(locked, write=False) as conn:
            rows = await store.due(conn, self.batch)
        if not rows:
            return self.poll, True
        done: list[int] = []
        try:
            for row in rows:
                pos = int(row.o_pos)
                if self._held_by_gap(pos):
                    return GAP_POLL, True
                if row.id is None:  # the event is gone (its outbox row stayed behind)
                    done.append(pos)
                    self._last = pos
                    continue
                now = utcnow()
                if row.next_attempt_at is not None and as_utc(row.next_attempt_at) > now:
                    return (as_utc(row.next_attempt_at) - now).total_seconds(), False
                if await self._attempt(row):
                    done.append(pos)
                    self._last = pos
                    continue
                retry = await self._failed(locked, row, now, done)
                if retry is not None:
                    return retry, False
            return (0.0 if len(rows) == self.batch else LINGER), False
        finally:
            if done:
                async with self._conn(locked, write=True) as conn:
                    await store.forget(conn, done)

    def _held_by_gap(self, pos: int) -> bool:
        """Whether ``pos`` waits for lower positions that may still commit (PostgreSQL)."""
        last = self._last
        if last is None or pos <= last + 1 or self.order_wait <= 0:
            self._gap = None
            return False
        now = time.monotonic()
        if self._gap is None or self._gap[0] != last:
            self._gap = (last, now)
        if now - self._gap[1] < self.order_wait:
            return True
        log.debug("webhooks: positions %d-%d never committed; passed", last + 1, pos - 1)
        self._gap, self._last = None, pos - 1  # not waited for again (a retry of pos)
        return False

    async def _attempt(self, row: Any) -> bool:
        """One POST of the event; whether it was delivered."""
        body = orjson.dumps(event_wire(row))
        headers = {EVENT_ID_HEADER: row.id, HEADER: sign(self._secret, body)}  # t: this attempt's
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._client.post(body, headers)
            outcome, ok = f"status {status}", 200 <= status < 300
        except (HookError, TimeoutError, OSError) as exc:
            outcome, ok = type(exc).__name__, False
        except Exception as exc:  # a bug must not stop the queue: counted as a failure
            log.exception("webhook attempt of %s failed", row.id)
            outcome, ok = type(exc).__name__, False
        self._count("delivered" if ok else "failed")
        if not ok:
            log.warning("webhook of feed event %s not delivered (%s)", row.id, outcome)
        return ok

    async def _failed(
        self, locked: AsyncConnection | None, row: Any, at: datetime, done: list[int]
    ) -> float | None:
        """Record a failed attempt: seconds to the next one, or None when the event is given
        up (then it joins ``done``, and the queue moves on)."""
        first: datetime = at if row.first_attempt_at is None else as_utc(row.first_attempt_at)
        deadline = first + self.window
        if at >= deadline:
            self._count("dropped")
            log.error(
                "webhook of feed event %s dropped after %d attempts since %s",
                row.id,
                int(row.attempts) + 1,
                first.isoformat(),
            )
            done.append(int(row.o_pos))
            self._last = int(row.o_pos)
            return None
        ceiling = min(self.max_backoff, 2.0 ** min(int(row.attempts), 30))
        delay = ceiling * (1 - random.random() / 2)
        retry_at = min(at + timedelta(seconds=delay), deadline)
        async with self._conn(locked, write=True) as conn:
            await store.failed(conn, int(row.o_pos), at, retry_at)
        return max(0.0, (retry_at - at).total_seconds())
