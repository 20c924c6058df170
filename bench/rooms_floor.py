"""Many rooms, the stack's floor beside the raw baseline: how close to the baseline anything built
on the service's HTTP stack can come, storing nothing.

The suite's rooms scenario (1,000 sockets in 50 rooms of 20, posts to the rooms in turn, a step
passes with delivery 1.0 and p99 <= 50 ms), run in one ladder on the raw broadcast baseline
(``bench/baseline.py``) and on ``bench.floor --kind rooms``: the service's server, protocols,
request middleware, token check and request model, fanning each post out the way the service's
fan-out writes it, but with no commit, no rate limit and no bus. Optionally the service too
(``--service``, PostgreSQL + Redis, as the suite starts it), in the same ladder.

    ulimit -n 20000; .venv/bin/python -m bench.rooms_floor --rates 500,1000,1500,2000,2500,3000
    ulimit -n 20000; .venv/bin/python -m bench.rooms_floor --service --rates ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from tests.cluster import Instance

from bench.common import REDIS, SECRET, UNLIMITED, scratch
from bench.suite import OUT, ROOMS, climb, start_baseline, start_floor

SUBSCRIBERS = 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000,3500,4000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--service", action="store_true", help="the service in the ladder too")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    baseline, bws, bpub = await asyncio.to_thread(start_baseline)
    floor, fport = await asyncio.to_thread(start_floor, "rooms")
    targets = {
        "baseline": ("baseline", f"ws://127.0.0.1:{bws}", f"http://127.0.0.1:{bpub}", baseline.pid),
        "floor": ("service", f"ws://127.0.0.1:{fport}", f"http://127.0.0.1:{fport}", floor.pid),
    }
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(baseline.terminate)
        stack.callback(floor.terminate)
        if args.service:
            space = await stack.enter_async_context(scratch("rooms-floor"))
            env = {
                "CITY_JWT_SECRET": SECRET,
                "LOG_LEVEL": "warning",
                **UNLIMITED,
                "CITY_WS_SEND_QUEUE": "100000",
                "DATABASE_URL": space.database_url,
                "REDIS_URL": REDIS,
                "CITY_REDIS_PREFIX": space.redis_prefix,
                "DATABASE_POOL_SIZE": "20",
                "CITY_DATA_DIR": str(OUT / "rooms-floor-data"),
            }
            service = Instance("bench-rooms-floor", env, OUT)
            await asyncio.to_thread(service.start)
            stack.callback(service.stop)
            pid = service.proc.pid if service.proc else 0
            targets["service"] = ("service", service.ws_url(""), service.base_url, pid)
        best = await climb(targets, "rooms", rates, SUBSCRIBERS, args.seconds)
    base = best["baseline"]
    summary: dict[str, Any] = {"rooms": ROOMS, "best": best}
    for name, line in best.items():
        if name != "baseline" and line and base:
            summary[f"{name}/baseline"] = round(
                line["deliveries_per_s"] / base["deliveries_per_s"], 2
            )
    print(json.dumps({"summary": summary}, indent=2), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
