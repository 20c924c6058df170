"""Two versions of the service, alternating, in one run (PostgreSQL + Redis): posts (50
clients), fan-out (1,000 subscribers, one publisher at ``--rate``) or rooms (the same
subscribers in 50 rooms of 20, ``--rate`` posts per second in all).

    .venv/bin/python -m bench.compare --old HEAD~1 --new WORKTREE --rounds 3
    .venv/bin/python -m bench.compare --scenario fanout --rate 75 --old HEAD~1 --new HEAD
    .venv/bin/python -m bench.compare --sqlite --old HEAD~1 --new WORKTREE --rounds 3
    .venv/bin/python -m bench.compare --old WORKTREE --new WORKTREE \
        --new-env CITY_WEBHOOK_URL=http://127.0.0.1:9911/ --new-env CITY_WEBHOOK_SECRET=s

Each version is the package source of a git revision (``git archive``), or the working tree for
``WORKTREE``; the server of each round imports it through ``PYTHONPATH`` and gets a database of
its own; ``--old-env``/``--new-env KEY=VALUE`` (repeatable) add to a version's environment (the
same code with a feature on and off, say). The machine drifts by tens of percent over minutes,
so only rounds that alternate are compared; the summary gives each version's median.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tests.cluster import Instance

from bench.common import REDIS, SECRET, UNLIMITED, Scratch, scratch
from bench.suite import OUT, fanout_step, loadgen

WORKTREE = "WORKTREE"


def export(rev: str, into: Path) -> Path:
    """The ``src`` directory of ``rev``: a git revision, ``WORKTREE``, or a directory holding
    a ``src`` (a patched copy, say)."""
    if rev == WORKTREE:
        return Path("src").resolve()
    if Path(rev, "src").is_dir():
        return Path(rev, "src").resolve()
    archive = subprocess.run(["git", "archive", rev, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into / rev.replace("/", "_"), filter="data")
    return into / rev.replace("/", "_") / "src"


def version_env(space: Scratch, src: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a service that runs the package at ``src`` on a scratch database and
    key prefix, with the abuse limits lifted."""
    return {
        "CITY_JWT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
        **UNLIMITED,
        "DATABASE_URL": space.database_url,
        "REDIS_URL": REDIS,
        "CITY_REDIS_PREFIX": space.redis_prefix,
        "DATABASE_POOL_SIZE": "20",
        "PYTHONPATH": str(src),
        "CITY_DATA_DIR": str(data_dir),
    }


async def one_round(label: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    async with scratch("compare") as space:
        env = version_env(space, src, OUT / f"compare-{label}") | extra_env(args, label)
        if args.sqlite:  # a fresh SQLite file of the round's own instead of PostgreSQL
            env["DATABASE_URL"] = (
                f"sqlite:///{OUT / f'compare-{label}-{space.redis_prefix[:-1]}.db'}"
            )
        service = Instance(f"bench-compare-{label}", env, OUT)
        await asyncio.to_thread(service.start)
        try:
            pid = service.proc.pid if service.proc else 0
            if args.scenario in ("fanout", "rooms"):
                ws = f"ws://127.0.0.1:{service.port}"
                step = ("service", ws, service.base_url, pid, args.rate, 1000, args.seconds)
                result = await asyncio.to_thread(fanout_step, *step, args.scenario)
            else:
                options = ["post", "--clients", str(args.clients), "--seconds", str(args.seconds)]
                (result,) = await asyncio.to_thread(
                    loadgen,
                    *options,
                    "--room",
                    "science",
                    "--http",
                    service.base_url,
                    "--pid",
                    str(pid),
                )
        finally:
            await asyncio.to_thread(service.stop)
    result["target"] = label
    print(json.dumps(result), flush=True)
    return result


def extra_env(args: argparse.Namespace, label: str) -> dict[str, str]:
    """The ``--old-env`` or ``--new-env`` settings of a version."""
    pairs = getattr(args, f"{label}_env") or []
    return dict(pair.split("=", 1) for pair in pairs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", default="HEAD")
    parser.add_argument("--new", default=WORKTREE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--scenario", choices=["post", "fanout", "rooms"], default="post")
    parser.add_argument("--rate", type=int, default=75, help="fanout: posts per second")
    parser.add_argument("--sqlite", action="store_true", help="each server on a SQLite file")
    for label in ("old", "new"):
        parser.add_argument(f"--{label}-env", action="append", metavar="KEY=VALUE")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"old": export(args.old, Path(tmp)), "new": export(args.new, Path(tmp))}
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            for label, src in versions.items():
                runs[label].append(await one_round(label, src, args))
    keys = {
        "post": ["commits_per_s", "p99_ms", "server_cpu_ms_per_post"],
        "fanout": ["deliveries_per_s", "delivery_ratio", "latency_p99_ms", "cpu_us_per_delivery"],
    }[args.scenario if args.scenario == "post" else "fanout"]
    summary = {
        label: {"rev": getattr(args, label), "env": extra_env(args, label)}
        | {key: statistics.median(r[key] for r in rs) for key in keys}
        for label, rs in runs.items()
    }
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
