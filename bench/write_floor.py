"""The machine's floor for one fan-out pass: one frame written to N sockets from one event loop.

    ulimit -n 20000; .venv/bin/python -m bench.write_floor 9000

N loopback TCP connections to a uvloop server in this process (the client ends are never read,
so no reader is woken); then, five times, the same 204-byte WebSocket frame is written to every
server-side transport with ``transport.write``, as the service's fan-out does, and the pass's
wall and CPU time are printed. Whatever a server does per socket comes on top of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

import uvloop

FRAME = b"\x81\x7e\x00\xc8" + b"x" * 200  # a text frame of 200 bytes, unmasked


async def main(n: int) -> None:
    loop = asyncio.get_running_loop()
    accepted: list[Any] = []
    everyone = asyncio.Event()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)
            if len(accepted) == n:
                everyone.set()

    server = await loop.create_server(Server, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for i in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        clients.append(sock)
        if i % 500 == 0:
            await asyncio.sleep(0.01)
    await everyone.wait()
    for round_ in range(5):
        began, cpu = time.perf_counter(), time.process_time()
        for transport in accepted:
            transport.write(FRAME)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        print(f"pass {round_}: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU, {n} sockets")
        for sock in clients:  # empty the client buffers between passes
            with contextlib.suppress(BlockingIOError):
                sock.recv(65536)
        await asyncio.sleep(0.2)
    server.close()
    for sock in clients:
        sock.close()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9000))
