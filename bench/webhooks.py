"""The webhook sender's deliveries per second to a local receiver, and that receiver.

    .venv/bin/python -m bench.webhooks --rounds 3 --seconds 5        # PostgreSQL and SQLite
    .venv/bin/python -m bench.webhooks serve --port 9911             # a receiver, for compare

A round: one `daarion-city serve` with webhooks on, pointed at a port nobody listens on yet
(its attempts are refused; CITY_WEBHOOK_MAX_BACKOFF=0.5 keeps retrying the head); 50 clients
post for ``--seconds`` (bench.loadgen post), which fills the outbox; then the receiver (a plain
asyncio HTTP/1.1 server in this process that checks every signature) starts on that port, and
the deliveries per second are (N - 1) / (the last arrival - the first), N the events waiting.
Every event must arrive, once, signed. The CPU per delivery of the instance and of its sender
process (PostgreSQL: CITY_WEBHOOK_SENDER=auto) is read from /proc.

``serve`` runs the same receiver until interrupted (200 to every POST; no signature check) for
``bench.compare --new-env CITY_WEBHOOK_URL=http://127.0.0.1:9911/ ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cluster import Instance, free_port

from bench.common import REDIS, SECRET, UNLIMITED, scratch
from bench.suite import OUT, loadgen
from daarion_city.config import Settings
from daarion_city.feed.signing import verify
from daarion_city.storage import webhooks as outbox
from daarion_city.storage.database import Database

HOOK_SECRET = "bench-webhook-secret-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
SRC = str(Path("src").resolve())  # this checkout's package, for the service


class Sink:
    """What the receiver got: event ids in arrival order, arrival times, bad signatures."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.ids: list[str] = []
        self.times: list[float] = []
        self.bad = 0
        self.done = asyncio.Event()
        self.expected = 0

    def got(self, event_id: str, signature: str, body: bytes) -> None:
        if self.secret is not None and not verify(self.secret, signature, body):
            self.bad += 1
        self.ids.append(event_id)
        self.times.append(time.perf_counter())
        if self.expected and len(self.ids) >= self.expected:
            self.done.set()


class Receiver(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: each request read by its Content-Length, answered 204."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            fields: dict[str, str] = {}
            for line in bytes(self.buffer[:end]).decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            length = int(fields.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            event_id, signature = fields.get("x-city-event-id", ""), fields.get("x-city-signature")
            self.sink.got(event_id, signature or "", body)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


async def listen(sink: Sink, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Receiver(sink), "127.0.0.1", port)


def cpu_ms(pid: int) -> tuple[float, float]:
    """CPU ms of the process and of its living children (the webhook sender's process)."""
    own, children = 0.0, 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ms = (int(fields[11]) + int(fields[12])) * 1000 / TICKS
        if stat.parent.name == str(pid):
            own += ms
        elif fields[1] == str(pid):
            children += ms
    return own, children


async def one_round(store: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    async with scratch("webhooks") as space:
        with tempfile.TemporaryDirectory() as tmp:
            url = space.database_url if store == "postgresql" else f"sqlite:///{tmp}/city.sqlite3"
            env = {
                "CITY_JWT_SECRET": SECRET,
                "LOG_LEVEL": "error",
                **UNLIMITED,
                "DATABASE_URL": url,
                "REDIS_URL": REDIS if store == "postgresql" else "",
                "CITY_REDIS_PREFIX": space.redis_prefix,
                "DATABASE_POOL_SIZE": "20",
                "PYTHONPATH": SRC,
                "CITY_DATA_DIR": tmp,
                "CITY_WEBHOOK_URL": f"http://127.0.0.1:{port}/hooks",
                "CITY_WEBHOOK_SECRET": HOOK_SECRET,
                "CITY_WEBHOOK_MAX_BACKOFF": "0.5",
            }
            service = Instance(f"bench-webhooks-{store}", env, OUT)
            await asyncio.to_thread(service.start)
            try:
                assert service.proc is not None
                options = ["post", "--clients", "50", "--seconds", str(args.seconds)]
                (posts,) = await asyncio.to_thread(
                    loadgen, *options, "--room", "science", "--http", service.base_url
                )
                db = Database(Settings(database_url=url).effective_database_url)
                try:
                    async with db.read() as conn:
                        waiting = await outbox.pending(conn)
                finally:
                    await db.dispose()
                sink = Sink(HOOK_SECRET)
                sink.expected = waiting
                before = cpu_ms(service.proc.pid)
                server = await listen(sink, port)
                try:
                    await asyncio.wait_for(sink.done.wait(), args.timeout)
                finally:
                    server.close()
                after = cpu_ms(service.proc.pid)
                spent, sender = after[0] - before[0], after[1] - before[1]
            finally:
                await asyncio.to_thread(service.stop)
    span = sink.times[-1] - sink.times[0]
    return {
        "store": store,
        "events": waiting,
        "posts_per_s": posts.get("commits_per_s"),
        "deliveries_per_s": round((len(sink.ids) - 1) / span, 1) if span > 0 else None,
        "server_cpu_us_per_delivery": round(spent * 1000 / max(1, len(sink.ids)), 1),
        "sender_process_cpu_us_per_delivery": round(sender * 1000 / max(1, len(sink.ids)), 1),
        "duplicates": len(sink.ids) - len(set(sink.ids)),
        "bad_signatures": sink.bad,
    }


async def serve(port: int) -> None:
    sink = Sink(None)
    server = await listen(sink, port)
    print(json.dumps({"receiver": f"http://127.0.0.1:{port}/"}), flush=True)
    try:
        await server.serve_forever()
    finally:
        print(json.dumps({"received": len(sink.ids)}), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", nargs="?", choices=["run", "serve"], default="run")
    parser.add_argument("--port", type=int, default=9911, help="serve: the receiver's port")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="of posts filling the outbox")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--stores", default="postgresql,sqlite")
    args = parser.parse_args()
    if args.command == "serve":
        await serve(args.port)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for store in args.stores.split(","):
            result = await one_round(store, args)
            print(json.dumps(result), flush=True)
            runs.setdefault(store, []).append(result)
    keys = ["deliveries_per_s", "server_cpu_us_per_delivery", "events"]
    summary = {
        store: {key: statistics.median(r[key] for r in rs) for key in keys}
        for store, rs in runs.items()
    }
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
