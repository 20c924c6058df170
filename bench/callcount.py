"""Python calls per post (or per presence heartbeat) of two versions of the service, under
cProfile (PostgreSQL + Redis).

    .venv/bin/python -m bench.callcount --old d91898e --new HEAD
    .venv/bin/python -m bench.callcount --scenario heartbeat --old d91898e --new HEAD

CPU figures on these shared machines drift by tens of percent between rounds; the number of
Python function calls a post costs does not. Each version (a git revision, ``WORKTREE`` or a
directory holding a ``src``, as in ``bench.compare``) serves 20 clients posting (or 50 presence
sockets sending heartbeats that change nothing, as ``bench.presence`` does) for a few seconds
under ``python -m cProfile``; the output is calls and profiled time per post for each, then the
functions whose calls per post changed most. Profiled time is inflated by the profiler: compare
the two versions with each other, never with ``bench.compare``'s figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.cluster import free_port
from websockets.asyncio.client import connect

from bench.common import scratch
from bench.compare import WORKTREE, export, version_env
from bench.presence import HB, PING, drain_until_pong, pump, token
from bench.suite import loadgen


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def heartbeats(base: str, seconds: float) -> float:
    """Heartbeats 50 presence sockets sent (and the server handled) in ``seconds``."""
    url = base.replace("http://", "ws://") + "/ws/city/presence?token="
    sockets = [
        await connect(url + token(f"u_cc_{i}"), max_size=None, compression=None) for i in range(50)
    ]
    for ws in sockets:  # past the snapshot and the others' joins
        await ws.send(PING)
        await drain_until_pong(ws)
    done = await pump(sockets, HB, seconds)
    for ws in sockets:
        await ws.close()
    return float(done)


async def profile(
    label: str, src: Path, tmp: Path, seconds: float, scenario: str = "post"
) -> tuple[pstats.Stats, float]:
    """The profile of one version's server and the number of posts it committed (or of
    heartbeats it handled)."""
    async with scratch("callcount") as space:
        port = free_port()
        out = tmp / f"{label}.prof"
        env = {
            **os.environ,
            **version_env(space, src, tmp / f"data-{label}"),
            "CITY_PORT": str(port),
        }
        command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "daarion_city", "serve"]
        with (tmp / f"{label}.log").open("wb") as log:
            server = await asyncio.to_thread(
                subprocess.Popen, command, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _ready(base):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{label} did not start: see {tmp / label}.log")
            await asyncio.sleep(0.3)
        if scenario == "heartbeat":
            done = await heartbeats(base, seconds)
        else:
            options = ["post", "--clients", "20", "--seconds", str(seconds), "--room", "science"]
            (result,) = await asyncio.to_thread(loadgen, *options, "--http", base)
            done = float(result["commits_per_s"]) * seconds
        # uvicorn re-raises SIGTERM after its shutdown, which would kill the profiler before it
        # writes; SIGINT ends as KeyboardInterrupt, and cProfile writes on the way out.
        server.send_signal(signal.SIGINT)
        server.wait(30)
        return pstats.Stats(str(out)), done


def per_post(stats: pstats.Stats, posts: float) -> dict[str, float]:
    calls: dict[str, float] = {}
    for (file, _, name), (_, ncalls, *_) in stats.stats.items():  # type: ignore[attr-defined]
        key = re.sub(r" at 0x[0-9a-f]+", "", f"{Path(file).name}:{name}")  # no addresses
        calls[key] = calls.get(key, 0.0) + ncalls / posts
    return calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", default="HEAD")
    parser.add_argument("--new", default=WORKTREE)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--scenario", choices=["post", "heartbeat"], default="post")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        calls = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            stats, posts = await profile(label, export(rev, tmp), tmp, args.seconds, args.scenario)
            total = stats.total_calls / posts  # type: ignore[attr-defined]
            tt = stats.total_tt / posts * 1e6  # type: ignore[attr-defined]
            unit = "heartbeat" if args.scenario == "heartbeat" else "post"
            each = f"{total:.1f} calls/{unit}, {tt:.0f} us/{unit}"
            print(f"{label} ({rev}): {posts:.0f} {unit}s, {each}")
            calls[label] = per_post(stats, posts)
    old, new = calls["old"], calls["new"]
    changed = sorted(set(old) | set(new), key=lambda k: new.get(k, 0.0) - old.get(k, 0.0))
    print(f"calls/{unit}: change, old, new, function")
    for key in changed[-args.top :][::-1] + changed[: args.top]:
        delta = new.get(key, 0.0) - old.get(key, 0.0)
        if abs(delta) >= 0.5:
            print(f"{delta:+8.2f} {old.get(key, 0.0):8.2f} {new.get(key, 0.0):8.2f}  {key}")


if __name__ == "__main__":
    asyncio.run(main())
