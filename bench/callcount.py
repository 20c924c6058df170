"""Python calls per post of two versions of the service, under cProfile (PostgreSQL + Redis).

    .venv/bin/python -m bench.callcount --old d91898e --new HEAD

CPU figures on these shared machines drift by tens of percent between rounds; the number of
Python function calls a post costs does not. Each version (a git revision, ``WORKTREE`` or a
directory holding a ``src``, as in ``bench.compare``) serves 20 clients posting for a few seconds
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

from bench.common import scratch
from bench.compare import WORKTREE, export, version_env
from bench.suite import loadgen


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def profile(label: str, src: Path, tmp: Path, seconds: float) -> tuple[pstats.Stats, float]:
    """The profile of one version's server and the number of posts it committed."""
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
        options = ["post", "--clients", "20", "--seconds", str(seconds), "--room", "science"]
        (result,) = await asyncio.to_thread(loadgen, *options, "--http", base)
        # uvicorn re-raises SIGTERM after its shutdown, which would kill the profiler before it
        # writes; SIGINT ends as KeyboardInterrupt, and cProfile writes on the way out.
        server.send_signal(signal.SIGINT)
        server.wait(30)
        return pstats.Stats(str(out)), float(result["commits_per_s"]) * seconds


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
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        calls = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            stats, posts = await profile(label, export(rev, tmp), tmp, args.seconds)
            total = stats.total_calls / posts  # type: ignore[attr-defined]
            tt = stats.total_tt / posts * 1e6  # type: ignore[attr-defined]
            print(f"{label} ({rev}): {posts:.0f} posts, {total:.1f} calls/post, {tt:.0f} us/post")
            calls[label] = per_post(stats, posts)
    old, new = calls["old"], calls["new"]
    changed = sorted(set(old) | set(new), key=lambda k: new.get(k, 0.0) - old.get(k, 0.0))
    print("calls/post: change, old, new, function")
    for key in changed[-args.top :][::-1] + changed[: args.top]:
        delta = new.get(key, 0.0) - old.get(key, 0.0)
        if abs(delta) >= 0.5:
            print(f"{delta:+8.2f} {old.get(key, 0.0):8.2f} {new.get(key, 0.0):8.2f}  {key}")


if __name__ == "__main__":
    asyncio.run(main())
