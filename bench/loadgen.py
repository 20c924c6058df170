"""Load generator for the service and the baseline; each scenario prints one JSON line.

    ulimit -n 20000
    .venv/bin/python -m bench.loadgen fanout --target service --ws ws://127.0.0.1:7001 \\
        --http http://127.0.0.1:7001 --subscribers 1000 --rate 100 --seconds 5 --pid PID
    .venv/bin/python -m bench.loadgen post --http http://127.0.0.1:7001 --clients 50 --seconds 10
    .venv/bin/python -m bench.loadgen idle --ws ws://127.0.0.1:7001 --sockets 20000 --pid PID
    .venv/bin/python -m bench.loadgen history --http http://127.0.0.1:7001 --room big

``bench/suite.py`` starts the servers and runs these side by side with the baseline.

fanout: S subscribers in one room (spread over ``--procs`` processes); a publisher posts at rate
R for the given seconds, each body carrying its send time. Reported: deliveries/s, publish ->
deliver latency p50/p99 (sampled on every 50th socket), the delivery ratio (frames received /
posts x S), and the server's CPU microseconds per delivery (from /proc/PID/stat).

rooms: the same with the S subscribers spread over ``--rooms`` rooms (``{room}-0`` ...), and the
posts (R per second in all) going to the rooms in turn: many small rooms, each post reaching
S / rooms sockets, so the per-post path (commits, the bus, one channel per room) weighs more
than the per-socket writes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import queue
import statistics
import time
from collections.abc import Callable
from typing import Any, cast

import httpx
import jwt
import orjson
from websockets.asyncio.client import connect

SECRET = os.environ.get("CITY_JWT_SECRET", "bench-secret-0123456789-0123456789-abc")
TICKS = os.sysconf("SC_CLK_TCK")


def token(user_id: str) -> str:
    claims = {"sub": user_id, "name": user_id, "exp": int(time.time()) + 7200}
    return jwt.encode(claims, SECRET, "HS256")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / TICKS, sum(fields) / TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Each run dials from addresses of its own: a socket the client closes stays in TIME_WAIT for
# 60 s on its (address, port), and one address has 28,232 ephemeral ports here, so storms of
# 10,000 in a row from one address ran out of ports in the third ("Cannot assign requested
# address", for every other client on the machine too).
RUN_NET = int.from_bytes(os.urandom(1)) % 250 + 1


def source_address(i: int) -> tuple[str, int]:
    """Spread connections over 127.0.{run}.x, 5,000 to an address, so none runs out of ports."""
    return (f"127.0.{RUN_NET}.{2 + (i // 5000) % 250}", 0)


# --- fan-out --------------------------------------------------------------------------------
def room_names(room: str, rooms: int) -> list[str]:
    """The rooms of a run: ``room`` itself, or ``room-0`` ... ``room-{rooms-1}``."""
    return [room] if rooms <= 1 else [f"{room}-{k}" for k in range(rooms)]


def _subscriber_proc(
    ws_base: str,
    rooms: list[str],
    count: int,
    offset: int,
    ready: Any,
    results: Any,
    stop: Any,
    client: str,
    dialing: int,
) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_subscribers(ws_base, rooms, count, offset, ready, results, stop, client, dialing))


class RawSubscriber(asyncio.Protocol):
    """A WebSocket subscriber that reads frames with a minimal parser. The ``websockets`` client
    costs about 20 µs of Python per received frame, three times what the servers spend per
    delivery, so with two cores shared the load generator saturated first and capped both
    targets at the same rate. This one counts frames at a few µs each; it answers pings and
    reads the payload as JSON only on the sockets that sample latency."""

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self.on_frame = on_frame
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.opened, self.closed):
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buf[:200]).decode("latin-1")))
                return
            del buf[: end + 4]
            self.opened.set_result(None)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            length, start = buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if n - start < length:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[start : start + length])
            pos = start + length
            if opcode == 0x1:
                self.on_frame(payload)
            elif opcode == 0x9:
                self.send(0xA, payload)  # pong
            elif opcode == 0x8:
                self.send(0x8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
        del buf[:pos]

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 requires of clients)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


REFUSED = 3  # a socket closed by the server before its room.state


class Tally:
    """Sockets that got their ``room.state`` (1) or the warm-up message (2), told to the parent
    as counts every 20 ms rather than one queue item per socket: a put per socket cost the
    client processes and the parent (a pickle, a pipe write and a wake-up each) CPU that the
    servers measured on the same two cores needed."""

    def __init__(self, ready: Any) -> None:
        self.ready = ready
        self.counts = {1: 0, 2: 0, REFUSED: 0}

    def add(self, kind: int) -> None:
        self.counts[kind] += 1

    def flush(self) -> None:
        for kind, n in self.counts.items():
            if n:
                self.ready.put((kind, n))
                self.counts[kind] = 0

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.02)
                self.flush()
        finally:
            self.flush()


def wait_tally(ready: Any, kind: int, total: int, timeout: float) -> int:
    """Block until ``total`` sockets were counted as ``kind`` or refused (``TimeoutError`` past
    a silence of ``timeout`` seconds); how many were refused."""
    got = refused = 0
    while got + refused < total:
        try:
            told, n = ready.get(True, timeout)
        except queue.Empty:
            raise TimeoutError(f"{got} of {total} sockets counted") from None
        if told == REFUSED:
            refused += n
        elif told == kind:
            got += n
        else:
            raise RuntimeError(f"expected counts of kind {kind}, got {told}")
    return refused


async def open_raw(
    url: str, local_addr: tuple[str, int], on_frame: Callable[[bytes], None]
) -> RawSubscriber:
    """Connect and upgrade; the protocol then feeds every text frame to ``on_frame``."""
    rest = url.split("://", 1)[1]
    host_port, path = rest.split("/", 1)
    host, port = host_port.split(":")
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: RawSubscriber(on_frame), host, int(port), local_addr=local_addr
    )
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write(
        f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(proto.opened, 60)
    return proto


async def _subscribers(
    ws_base: str,
    rooms: list[str],
    count: int,
    offset: int,
    ready: Any,
    results: Any,
    stop: Any,
    client: str = "raw",
    dialing: int = 25,
) -> None:
    latencies: list[float] = []
    received = [0]
    # Connect like clients arriving, not all in one instant: at most ``dialing`` sockets of
    # this process between their dial and their room.state.
    opening = asyncio.Semaphore(dialing)
    tally = Tally(ready)

    def frame_handler(sample: bool, first: asyncio.Future[None]) -> Callable[[bytes], None]:
        def on_frame(raw: bytes) -> None:
            if not first.done():
                first.set_result(None)  # room.state
                return
            if b'"room.message"' not in raw:
                return
            if b'"warmup' in raw:
                tally.add(2)  # everything sent before it (the join storm) is read
                return
            received[0] += 1
            if sample:
                sent = float(orjson.loads(raw)["message"]["body"].split(" ", 1)[0])
                latencies.append((time.time() - sent) * 1000)

        return on_frame

    def url_of(i: int) -> str:
        room = rooms[(offset + i) % len(rooms)]
        return f"{ws_base}/ws/city/rooms/{room}?token={token(f'u_sub_{offset + i}')}"

    async def one_raw(i: int) -> None:
        url = url_of(i)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with opening:
            try:
                proto = await open_raw(
                    url, source_address(offset + i), frame_handler(i % 50 == 0, first)
                )
                # Closed by the server before its room.state (refused): counted, not awaited
                # for ever.
                await asyncio.wait([first, proto.closed], return_when=asyncio.FIRST_COMPLETED)
            except (OSError, TimeoutError):
                first.cancel()
            if not first.done() or first.cancelled():
                tally.add(REFUSED)
                return
        tally.add(1)
        try:
            await proto.closed
        finally:
            if proto.transport is not None:
                proto.transport.abort()

    async def one(i: int) -> None:
        url = url_of(i)
        await opening.acquire()
        async with connect(
            url,
            max_size=None,
            compression=None,
            open_timeout=60,
            ping_interval=None,
            local_addr=source_address(offset + i),
        ) as ws:
            await ws.recv()  # room.state
            opening.release()
            tally.add(1)
            sample = i % 50 == 0  # parse every frame on a few sockets for the latency
            async for raw in ws:
                if '"room.message"' not in raw:
                    continue
                if '"warmup' in raw:
                    tally.add(2)  # everything sent before it (the join storm) is read
                    continue
                received[0] += 1
                if sample:
                    sent = float(orjson.loads(raw)["message"]["body"].split(" ", 1)[0])
                    latencies.append((time.time() - sent) * 1000)

    one_fn = one_raw if client == "raw" else one
    tasks = [asyncio.create_task(one_fn(i)) for i in range(count)]
    flusher = asyncio.create_task(tally.run())
    await asyncio.to_thread(stop.wait)
    flusher.cancel()
    await asyncio.sleep(1.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results.put({"received": received[0], "latencies": latencies})


async def fanout(args: argparse.Namespace) -> list[dict[str, Any]]:
    rooms = room_names(args.room, args.rooms if args.scenario == "rooms" else 1)
    if args.subscribers % len(rooms):
        raise SystemExit("--subscribers must be a multiple of --rooms")
    headers = {"Authorization": f"Bearer {token('u_publisher')}"}
    if args.target == "service" and len(rooms) > 1:
        async with httpx.AsyncClient(base_url=args.http, timeout=30) as http:
            for name in rooms:  # 409 when a previous run made it
                await http.post("/city/rooms", json={"slug": name, "name": name}, headers=headers)
    ctx = mp.get_context("spawn")
    ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [
        args.subscribers // args.procs + (1 if i < args.subscribers % args.procs else 0)
        for i in range(args.procs)
    ]
    procs, offset = [], 0
    storm_began = time.time()
    for n in per:
        p = ctx.Process(
            target=_subscriber_proc,
            args=(args.ws, rooms, n, offset, ready, results, stop, args.client, args.dialing),
        )
        p.start()
        procs.append(p)
        offset += n
    try:
        return await _publish_to(args, rooms, headers, (ready, results, stop), storm_began, procs)
    finally:
        stop.set()  # the subscriber processes end whatever happened here (else they wait)


async def _publish_to(
    args: argparse.Namespace,
    rooms: list[str],
    headers: dict[str, str],
    queues: tuple[Any, Any, Any],
    storm_began: float,
    procs: list[Any],
) -> list[dict[str, Any]]:
    """The storm's end, the warm-up barrier and the posts of :func:`fanout`."""
    ready, results, stop = queues
    refused = await asyncio.to_thread(wait_tally, ready, 1, args.subscribers, 120)
    storm_ended = time.time()  # every subscriber has its room.state (bench/storm.py)
    paths = [
        f"/city/rooms/{name}/messages" if args.target == "service" else f"/publish/{name}"
        for name in rooms
    ]
    rate = args.rate
    # The publisher's connections (keep-alive, one post in flight each): httpx would cost more
    # CPU per post than the servers at the rates of many small rooms, on the same two cores.
    # At most --publishers posts are in flight; a post due while all are busy waits for one
    # (counted in ``posts_waited``: its delivery latency includes the wait).
    idle_http: asyncio.Queue[RawHttp] = asyncio.Queue()
    for _ in range(args.publishers):
        idle_http.put_nowait(RawHttp(args.http))
    wire_headers = {"authorization": headers["Authorization"]}
    answer_ms: list[float] = []
    waited = 0

    async def publish(path: str, body: dict[str, str]) -> int:
        nonlocal waited
        if idle_http.empty():
            waited += 1
        http = await idle_http.get()
        began = time.perf_counter()
        try:
            return await http.post(path, orjson.dumps(body), wire_headers)
        finally:
            answer_ms.append((time.perf_counter() - began) * 1000)
            idle_http.put_nowait(http)

    try:
        # A barrier: the service announces each of the S joins to the others (S²/2 frames per
        # room, which the baseline does not send); measuring starts once every subscriber has
        # read past them.
        for path in paths:
            if (status := await publish(path, {"body": "warmup"})) != 201:
                raise SystemExit(f"the warm-up post answered {status}")
        await asyncio.to_thread(wait_tally, ready, 2, args.subscribers - refused, 300)
        await asyncio.sleep(0.5)
        split0 = cpu_split(args.pid) if args.pid else (0.0, 0.0)
        cpu0 = sum(split0)
        started = time.perf_counter()
        sent = 0
        pending: set[asyncio.Task[Any]] = set()
        while (elapsed := time.perf_counter() - started) < args.seconds:
            while sent < int(elapsed * rate) + 1:
                body = {"body": f"{time.time():.6f} x"}
                pending.add(asyncio.create_task(publish(paths[sent % len(paths)], body)))
                sent += 1
            await asyncio.sleep(0.002)
        answers = await asyncio.gather(*pending)
        answered = answer_ms[len(paths) :]  # not the warm-up posts
        wall = time.perf_counter() - started
        await asyncio.sleep(1.0)
        split1 = cpu_split(args.pid) if args.pid else (0.0, 0.0)
        cpu = (sum(split1) - cpu0) if args.pid else float("nan")
        sys_share = (split1[1] - split0[1]) / cpu if args.pid and cpu > 0 else float("nan")
    finally:
        while not idle_http.empty():
            await idle_http.get_nowait().close()
    stop.set()
    received, latencies = 0, []
    for _ in procs:
        r = await asyncio.to_thread(results.get, True, 60)
        received += r["received"]
        latencies += r["latencies"]
    for p in procs:
        p.join(10)
    expected = sent * args.subscribers // len(rooms)
    return [
        {
            "scenario": args.scenario,
            "target": args.target,
            "subscribers": args.subscribers,
            "rooms": len(rooms),
            "rate": rate,
            "posts_ok": sum(1 for status in answers if status == 201),
            "deliveries_per_s": round(received / wall),
            "delivery_ratio": round(received / expected, 4) if expected else None,
            "latency_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "latency_p99_ms": round(pct(latencies, 0.99), 2),
            "answer_p50_ms": round(statistics.median(answered), 2) if answered else None,
            "answer_p99_ms": round(pct(answered, 0.99), 2),
            "posts_waited": waited,
            "cpu_us_per_delivery": round(cpu / max(received, 1) * 1e6, 2),
            "cpu_kernel_share": round(sys_share, 2),
            "storm_began": round(storm_began, 3),
            "storm_s": round(storm_ended - storm_began, 2),
            "sockets_refused": refused,
        }
    ]


# --- HTTP posts ---------------------------------------------------------------------------------
class RawHttp:
    """A minimal HTTP/1.1 keep-alive client: httpx costs more CPU per request than the server
    it measures, which made the load generator the bottleneck."""

    def __init__(self, base: str) -> None:
        host_port = base.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        head = f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        return await self.request("POST", path, body, headers, head)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        return await self.request("GET", path, b"", headers or {})

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], head: str = ""
    ) -> int:
        """One request on the kept-alive connection; its status (the body is read and dropped).
        A kept-alive connection the server closed meanwhile (its idle timeout, while a long
        warm-up was read) is opened again once."""
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        wire = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n{head}\r\n".encode() + body
        reused = self.writer is not None
        try:
            return await self._exchange(wire)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            if not reused:
                raise
        return await self._exchange(wire)

    async def _exchange(self, wire: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(wire)
        status_line = await self.reader.readuntil(b"\r\n")
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return int(status_line.split(b" ", 2)[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def post(args: argparse.Namespace) -> list[dict[str, Any]]:
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + args.seconds
    path = f"/city/rooms/{args.room}/messages"

    async def client_loop(i: int) -> None:
        http = RawHttp(args.http)
        headers = {"authorization": f"Bearer {token(f'u_poster_{i}')}"}
        n = 0
        while time.perf_counter() < deadline:
            body = orjson.dumps(
                {"body": f"post {i} {n}", "client_msg_id": f"{i}-{n}-{os.getpid()}"}
            )
            t = time.perf_counter()
            status = await http.post(path, body, headers)
            if status == 201:
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                errors[0] += 1
            n += 1
        await http.close()

    cpu0 = cpu_seconds(args.pid) if args.pid else 0.0
    own0, busy0 = cpu_seconds(os.getpid()), machine_busy()[0]
    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(args.clients)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(args.pid) - cpu0 if args.pid else None
    own, busy = cpu_seconds(os.getpid()) - own0, machine_busy()[0] - busy0
    return [
        {
            "scenario": "post",
            "clients": args.clients,
            "commits_per_s": round(len(latencies) / wall),
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(pct(latencies, 0.99), 2),
            "errors": errors[0],
            "server_cpu_s": round(cpu, 2) if cpu is not None else None,
            # Cores busy on average over the run: the server, this load generator, the whole
            # machine (with the stores); the machine has os.cpu_count() of them.
            "server_cores": round(cpu / wall, 2) if cpu is not None else None,
            "loadgen_cores": round(own / wall, 2),
            "machine_cores": round(busy / wall, 2),
            "server_cpu_ms_per_post": round(cpu / max(len(latencies), 1) * 1000, 3)
            if cpu is not None
            else None,
        }
    ]


# --- idle sockets -----------------------------------------------------------------------------
async def idle(args: argparse.Namespace) -> list[dict[str, Any]]:
    # Spread over rooms of --room-size sockets: one room of 20,000 would measure the join storm
    # (every join is announced to everyone already there: n^2/2 frames), not idle memory.
    rooms = max(1, args.sockets // args.room_size)
    async with httpx.AsyncClient(base_url=args.http, timeout=30) as client:
        headers = {"Authorization": f"Bearer {token('u_idle_admin')}"}
        for r in range(rooms):
            await client.post(
                "/city/rooms", json={"slug": f"idle-{r}", "name": f"Idle {r}"}, headers=headers
            )
    before = rss_bytes(args.pid)
    sockets = []
    sem = asyncio.Semaphore(100)

    async def open_one(i: int) -> Any:
        async with sem:
            room = f"idle-{i % rooms}"
            url = f"{args.ws}/ws/city/rooms/{room}?token={token(f'u_idle_{i}')}"
            ws = await connect(
                url,
                max_size=None,
                compression=None,
                open_timeout=120,
                ping_interval=None,
                local_addr=source_address(i),
            )
            await ws.recv()
            return ws

    for chunk in range(0, args.sockets, 1000):
        sockets += await asyncio.gather(
            *(open_one(i) for i in range(chunk, min(chunk + 1000, args.sockets)))
        )
    await asyncio.sleep(2)
    after = rss_bytes(args.pid)
    for ws in sockets:
        ws.transport.abort()
    return [
        {
            "scenario": "idle",
            "sockets": len(sockets),
            "rooms": rooms,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "kib_per_socket": round((after - before) / len(sockets) / 1024, 2),
        }
    ]


# --- history ----------------------------------------------------------------------------------
async def history(args: argparse.Namespace) -> list[dict[str, Any]]:
    latencies = []
    async with httpx.AsyncClient(timeout=30) as client:
        last = (await client.get(f"{args.http}/city/rooms/{args.room}")).json()["last_message"][
            "seq"
        ]
        for i in range(args.reads):
            before = 1 + (i * 7919) % max(1, last)
            t = time.perf_counter()
            r = await client.get(
                f"{args.http}/city/rooms/{args.room}/messages",
                params={"before_seq": before, "limit": 50},
            )
            latencies.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        # The same client and server answering GET /healthz: what any read costs here.
        floor = []
        for _ in range(args.reads):
            t = time.perf_counter()
            r = await client.get(f"{args.http}/healthz")
            floor.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
    return [
        {
            "scenario": "history",
            "messages_in_room": last,
            "reads": args.reads,
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(pct(latencies, 0.99), 2),
            "healthz_p50_ms": round(statistics.median(floor), 2),
            "healthz_p99_ms": round(pct(floor, 0.99), 2),
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["fanout", "rooms", "post", "idle", "history"])
    parser.add_argument("--target", choices=["service", "baseline"], default="service")
    parser.add_argument("--ws", default="ws://127.0.0.1:7001")
    parser.add_argument("--http", default="http://127.0.0.1:7001")
    parser.add_argument("--room", default="general")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument(
        "--dialing",
        type=int,
        default=25,
        help="fanout/rooms: sockets each process has between dial and room.state, at most",
    )
    parser.add_argument("--rooms", type=int, default=50, help="rooms: how many")
    parser.add_argument(
        "--client",
        choices=["raw", "websockets"],
        default="raw",
        help="fanout subscribers: a minimal frame counter, or the websockets client",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="posts per second")
    parser.add_argument(
        "--publishers",
        type=int,
        default=200,
        help="fanout/rooms: the publisher's keep-alive connections (posts in flight at most; "
        "20 capped a server that answers after its commit at 20 / answer time, bench/RESULTS.md)",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--room-size", type=int, default=100, help="idle: sockets per room")
    parser.add_argument("--pid", type=int, default=0, help="the server's pid, for CPU and RSS")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    scenario = {"fanout": fanout, "rooms": fanout, "post": post, "idle": idle, "history": history}[
        args.scenario
    ]
    for line in asyncio.run(scenario(args)):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
