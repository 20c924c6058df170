"""The webhook sender in a process of its own (``CITY_WEBHOOK_SENDER``, PostgreSQL).

Each delivery is a socket round trip and some Python: about 50 µs of the event loop that also
serves the posts (bench/RESULTS.md, issue 25). The instance therefore starts the sender
(``feed/webhooks.py``, unchanged) as a child process, ``daarion-city send-webhooks``, and keeps
it running: a child that exits is started again after a pause that doubles up to 30 s.

The two talk over the child's standard streams, one line per message:
- to the child (stdin): a byte per wake-up (events were committed; several wakes of one loop
  iteration are one byte); the end of stdin (the instance stopped or died) stops the child, which
  lets go of the advisory lock as its connection closes;
- from the child (stdout): JSON lines, ``{"count": {"delivered": 3}}`` (added to
  ``city_webhook_deliveries_total`` of the instance's /metrics) and ``{"log": [level, logger,
  message]}`` (logged again by the instance, with its log settings).
The counts are told every ``COUNT_EVERY`` (0.2 s): a child killed with SIGKILL takes the counts
of its last moments with it, never a delivery (the outbox keeps what it had not forgotten).
The child reads its settings from the environment the instance gives it: every setting, as the
instance has it (``child_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import orjson
from pydantic import SecretStr

from daarion_city.config import Settings
from daarion_city.core.metrics import Metrics
from daarion_city.core.tasks import TaskSet

log = logging.getLogger("daarion_city.feed.webhooks")

RESTART_FIRST = 1.0  # seconds before a child that exited is started again; doubles
RESTART_MAX = 30.0
STOP_WAIT = 5.0  # seconds a stopping child has to let go before it is killed
LINE_LIMIT = 1 << 20  # bytes of one line from the child


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child that builds ``Settings()`` equal to ``settings``."""
    env = dict(os.environ)
    dumped = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        key, value, shown = name.upper(), getattr(settings, name), dumped[name]
        if value is None:
            env.pop(key, None)
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(shown, list | dict):  # pydantic-settings reads these as JSON
            env[key] = orjson.dumps(shown).decode()
        else:
            env[key] = str(shown)
    return env


class WebhookProcess:
    """The instance's side: starts, feeds and watches the child."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._env = child_env(settings)
        self._metrics = metrics
        self._proc: asyncio.subprocess.Process | None = None
        self._wake_due = False
        self._stopping = False
        self._tasks = TaskSet("webhooks-process")
        self.starts = 0  # children started (tests, logs)

    def wake(self, _events: object = None) -> None:
        if not self._wake_due:
            self._wake_due = True
            asyncio.get_running_loop().call_soon(self._send_wake)

    def _send_wake(self) -> None:
        self._wake_due = False
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        pipe = proc.stdin.transport
        # A wake not yet read by a busy child is enough for it: nothing piles up in memory.
        if not pipe.is_closing() and pipe.get_write_buffer_size() == 0:
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(b"w")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        self._tasks.spawn(self._supervise(), name="webhooks-process")
        log.info("webhooks on: sent by a process of their own")

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_WAIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await self._tasks.close()

    async def _supervise(self) -> None:
        pause = RESTART_FIRST
        while not self._stopping:
            try:
                code: int | str | None = await self._run_child()
            except Exception as exc:  # not started (no memory, no executable)
                code = f"{type(exc).__name__}: {exc}"
            if self._stopping:
                return
            log.warning("webhook sender process exited (%s); started again in %.0fs", code, pause)
            await asyncio.sleep(pause)
            pause = min(RESTART_MAX, pause * 2)

    async def _run_child(self) -> int | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daarion_city",
            "send-webhooks",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            limit=LINE_LIMIT,
        )
        self._proc = proc
        self.starts += 1
        try:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                self._heard(line)
            return await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: not left behind
                proc.kill()
                with contextlib.suppress(ProcessLookupError):
                    await proc.wait()

    def _heard(self, line: bytes) -> None:
        try:
            said: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("webhook sender process said %r", line[:200])
            return
        for result, n in said.get("count", {}).items():
            self._metrics.count_webhook(str(result), int(n))
        if said.get("log"):
            level, name, message = said["log"]
            logging.getLogger(str(name)).log(int(level), "%s", message)


# --- the child: ``daarion-city send-webhooks`` --------------------------------------------------
class _Forward(logging.Handler):
    """Log records of the child, as lines for the instance to log again."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        _say({"log": [record.levelno, record.name, message]})


def _say(said: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(said) + b"\n")
    sys.stdout.buffer.flush()


COUNT_EVERY = 0.2  # seconds between the child's reports of its counts


async def run_child(settings: Settings) -> None:
    """Send webhooks until stdin ends (the instance stopped)."""
    from daarion_city.feed.webhooks import WebhookSender
    from daarion_city.storage.database import Database

    handler = _Forward()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    counts: dict[str, int] = {}

    def count(result: str) -> None:
        counts[result] = counts.get(result, 0) + 1

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    db = Database(settings.effective_database_url, pool_size=2, timeout=settings.database_timeout)
    sender = WebhookSender(db, settings, count)

    async def report() -> None:
        while True:
            await asyncio.sleep(COUNT_EVERY)
            if counts:
                _say({"count": dict(counts)})
                counts.clear()

    reporting = asyncio.create_task(report())
    await sender.start()
    try:
        while await reader.read(4096):
            sender.wake()
    finally:
        await sender.stop()
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        if counts:
            _say({"count": counts})
        await db.dispose()
