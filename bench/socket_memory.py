"""What an idle room socket keeps in Python objects: the service (SQLite, in process) runs with
tracemalloc in a child process, `bench.loadgen idle` opens the sockets, and the child compares a
snapshot taken once they are open (1 s after the last) with one taken before, by file. (The
default asyncio loop, not uvloop: tracemalloc sees Python's allocations only.)

    ulimit -n 20000; .venv/bin/python -m bench.socket_memory --sockets 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc

import httpx
from tests.cluster import free_port, wait_for
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from bench.common import SECRET, UNLIMITED


async def serve(port: int, sockets: int, by: str = "filename") -> None:
    from daarion_city.app import create_app
    from daarion_city.config import Settings
    from daarion_city.edge.server import CityServer, server_config

    tracemalloc.start(1)
    settings = Settings()
    app = create_app(settings)
    server = CityServer(server_config(app, settings, host="127.0.0.1", port=port), app)

    async def watch() -> None:
        while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
            await asyncio.sleep(0.1)
        gc.collect()
        before = tracemalloc.take_snapshot()
        state = server.server_state
        while sum(isinstance(c, WebSocketsSansIOProtocol) for c in state.connections) < (  # noqa: ASYNC110
            sockets
        ):
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # past the join storm; `loadgen idle` holds them 2 s
        gc.collect()
        stats = tracemalloc.take_snapshot().compare_to(before, by)
        open_now = sum(isinstance(c, WebSocketsSansIOProtocol) for c in state.connections)
        where = "{}" if by == "filename" else "{}:{}"
        by_file = {
            where.format(
                s.traceback[0].filename.split("site-packages/")[-1].split("python3.11/")[-1],
                s.traceback[0].lineno,
            ): round(s.size_diff / open_now)
            for s in stats[: 15 if by == "filename" else 40]
        }
        total = sum(s.size_diff for s in stats) / open_now
        print(
            json.dumps({"sockets": open_now, "bytes_per_socket": round(total), "by_file": by_file}),
            flush=True,
        )
        server.should_exit = True

    task = asyncio.create_task(watch())
    await server.serve()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument(
        "--by", choices=["filename", "lineno"], default="filename", help="group allocations by"
    )
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.sockets, args.by))
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {
            **os.environ,
            **UNLIMITED,
            "CITY_JWT_SECRET": SECRET,
            "CITY_DATA_DIR": data,
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "LOG_LEVEL": "warning",
        }
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.socket_memory",
                "--sockets",
                str(args.sockets),
                "--serve",
                str(port),
                "--by",
                args.by,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        base = f"127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"http://{base}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, 30, "service")
        except Exception:
            child.kill()
            raise
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "idle",
                "--sockets",
                str(args.sockets),
                "--ws",
                f"ws://{base}",
                "--http",
                f"http://{base}",
                "--pid",
                str(child.pid),
            ],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        out, _ = child.communicate(timeout=120)
        print(out.strip())


if __name__ == "__main__":
    main()
