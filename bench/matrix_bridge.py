"""Matrix rooms bridge throughput (issue 24), beside the homeserver's own figure.

    .venv/bin/python -m bench.matrix_bridge [--messages 500] [--senders 4] [--rounds 3]

One Synapse (``tests/synapse.py``: SQLite, loopback) and one ``daarion-city serve`` (PostgreSQL,
``MATRIX_BRIDGE_ROOMS=general``), three ways, ``--messages`` each, from ``--senders`` concurrent
senders, per round:

- ``direct``: Matrix users send the messages to the bridged room through the client-server
  API; timed until another Matrix user's ``/sync`` has them all (the homeserver's own figure);
  ``direct_in_order`` the same from one user sending one message after another (the way the
  bridge sends a room's timeline, in order).
- ``city_to_matrix``: city users post them (HTTP); timed until that Matrix reader has every
  puppet's message.
- ``matrix_to_city``: the Matrix user sends them; timed until a city room socket has every one.

Each figure is messages per second from the first send to the last arrival; medians over the
rounds, and the ratios to ``direct``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from tests.cluster import Instance, token, wait_for
from tests.synapse import SERVER_NAME, Synapse
from websockets.asyncio.client import connect

from bench.common import SECRET, UNLIMITED, scratch
from daarion_city.config import Settings
from daarion_city.matrix.appservice import registration

# A sync returns every new event of the room (the default keeps the newest 10 of each sync).
TIMELINE = orjson.dumps({"room": {"timeline": {"limit": 5000}}}).decode()
AS_TOKEN = "as-" + secrets.token_hex(16)
HS_TOKEN = "hs-" + secrets.token_hex(16)


class Reader:
    """A Matrix user's ``/sync`` loop, counting the room's messages by sender."""

    def __init__(self, http: httpx.AsyncClient, access: str, room_id: str) -> None:
        self.http, self.room_id = http, room_id
        self.headers = {"Authorization": f"Bearer {access}"}
        self.seen: list[tuple[str, str]] = []
        self.since: str | None = None

    async def catch_up(self) -> None:
        """Skip what the room has now (incrementally after the first time)."""
        params = {"timeout": "0", "filter": TIMELINE}
        if self.since:
            params["since"] = self.since
        r = await self.http.get("/_matrix/client/v3/sync", params=params, headers=self.headers)
        self.since = r.json()["next_batch"]

    async def wait_for(self, count: int, prefix: str) -> float:
        """Sync until ``count`` messages whose body starts with ``prefix`` (at most 300 s);
        the time then."""
        deadline = time.perf_counter() + 300
        while sum(1 for _, b in self.seen if b.startswith(prefix)) < count:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {len(self.seen)} of {count} {prefix!r} arrived")
            params = {"timeout": "5000", "since": self.since or "", "filter": TIMELINE}
            r = await self.http.get(
                "/_matrix/client/v3/sync", params=params, headers=self.headers, timeout=30
            )
            data = r.json()
            self.since = data["next_batch"]
            room = data.get("rooms", {}).get("join", {}).get(self.room_id, {})
            if room.get("timeline", {}).get("limited"):
                raise RuntimeError("the reader's sync skipped events (limited)")
            for event in room.get("timeline", {}).get("events", []):
                if event["type"] == "m.room.message":
                    self.seen.append((event["sender"], event["content"].get("body", "")))
        return time.perf_counter()


async def matrix_user(http: httpx.AsyncClient, synapse: Synapse, name: str, alias: str) -> str:
    access = await asyncio.to_thread(synapse.register_user, name, "pass-" + name)
    r = await http.post(
        f"/_matrix/client/v3/join/{quote(alias)}",
        json={},
        headers={"Authorization": f"Bearer {access}"},
    )
    r.raise_for_status()
    return access


async def send_matrix(
    http: httpx.AsyncClient, access: str, room_id: str, bodies: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {access}"}
    for body in bodies:
        txn = secrets.token_hex(8)
        r = await http.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            json={"msgtype": "m.text", "body": body},
            headers=headers,
        )
        r.raise_for_status()


async def send_city(city: httpx.AsyncClient, user: str, bodies: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token(user, user, SECRET)}"}
    for body in bodies:
        r = await city.post("/city/rooms/general/messages", json={"body": body}, headers=headers)
        r.raise_for_status()


def split(prefix: str, n: int, senders: int) -> list[list[str]]:
    return [[f"{prefix} {i}" for i in range(s, n, senders)] for s in range(senders)]


async def one_round(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    city: httpx.AsyncClient,
    gateway: Instance,
    senders: list[str],
    reader: Reader,
    room_id: str,
) -> dict[str, float]:
    n, k = args.messages, args.senders
    tag = secrets.token_hex(3)
    rates: dict[str, float] = {}
    # direct: Matrix users to the Matrix reader
    await reader.catch_up()
    prefix = f"direct-{tag}"
    started = time.perf_counter()
    waiting = asyncio.ensure_future(reader.wait_for(n, prefix))
    await asyncio.gather(
        *(send_matrix(http, senders[i], room_id, b) for i, b in enumerate(split(prefix, n, k)))
    )
    rates["direct"] = n / (await waiting - started)
    # direct, in order: one Matrix user, each send after the last one's answer (as a client
    # that keeps its messages in order does, and as the bridge sends a room's timeline)
    await reader.catch_up()
    prefix = f"ordered-{tag}"
    started = time.perf_counter()
    waiting = asyncio.ensure_future(reader.wait_for(n, prefix))
    await send_matrix(http, senders[0], room_id, [f"{prefix} {i}" for i in range(n)])
    rates["direct_in_order"] = n / (await waiting - started)
    # city to Matrix: city users' posts to the Matrix reader
    await reader.catch_up()
    prefix = f"city-{tag}"
    started = time.perf_counter()
    waiting = asyncio.ensure_future(reader.wait_for(n, prefix))
    await asyncio.gather(
        *(send_city(city, f"u_bench_{i}", b) for i, b in enumerate(split(prefix, n, k)))
    )
    rates["city_to_matrix"] = n / (await waiting - started)
    # Matrix to city: Matrix users to a city room socket
    prefix = f"matrix-{tag}"
    url = gateway.ws_url(f"/ws/city/rooms/general?token={token('u_bench_reader', 'r', SECRET)}")
    async with connect(url, max_size=None) as ws:
        got = 0

        async def count() -> float:
            nonlocal got
            while got < n:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 300))
                if frame.get("event") == "room.message" and str(
                    frame.get("message", frame).get("body", "")
                ).startswith(prefix):
                    got += 1
            return time.perf_counter()

        started = time.perf_counter()
        waiting = asyncio.ensure_future(count())
        await asyncio.gather(
            *(send_matrix(http, senders[i], room_id, b) for i, b in enumerate(split(prefix, n, k)))
        )
        rates["matrix_to_city"] = n / (await waiting - started)
    return rates


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = Path.cwd() / os.environ.get("BENCH_WORKDIR", "bench/out")
    workdir = out / f"matrix-{secrets.token_hex(3)}"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with scratch("matrix") as space:
        env = {
            "DATABASE_URL": space.database_url,
            "REDIS_URL": "",
            "CITY_JWT_SECRET": SECRET,
            "CITY_DATA_DIR": str(workdir / "data"),
            "MATRIX_SERVER_NAME": SERVER_NAME,
            "MATRIX_AS_TOKEN": AS_TOKEN,
            "MATRIX_HS_TOKEN": HS_TOKEN,
            "MATRIX_BRIDGE_ROOMS": "general",
            "CITY_WS_SEND_QUEUE": "100000",
            "LOG_LEVEL": "warning",
            **UNLIMITED,
        }
        gateway = Instance("bench-bridge", env, workdir)
        gateway.env["MATRIX_AS_URL"] = gateway.base_url
        settings = Settings(
            matrix_server_name=SERVER_NAME,
            matrix_as_token=AS_TOKEN,
            matrix_hs_token=HS_TOKEN,
            matrix_as_url=gateway.base_url,
        )
        (workdir / "synapse").mkdir()
        synapse = Synapse(workdir / "synapse", registration(settings))
        gateway.env["MATRIX_HOMESERVER_URL"] = synapse.url
        await asyncio.to_thread(synapse.start)
        try:
            await asyncio.to_thread(gateway.start)
            async with (
                httpx.AsyncClient(base_url=synapse.url, timeout=60) as http,
                httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as city,
            ):

                def mapped() -> bool:
                    room = httpx.get(gateway.base_url + "/city/rooms/general").json()
                    return bool(room["matrix_room_id"])

                await asyncio.to_thread(wait_for, mapped, 60, "the bridged room")
                room = (await city.get("/city/rooms/general")).json()
                alias, room_id = room["matrix_room_alias"], room["matrix_room_id"]
                senders = [
                    await matrix_user(http, synapse, f"sender{i}{secrets.token_hex(2)}", alias)
                    for i in range(args.senders)
                ]
                reader_access = await matrix_user(
                    http, synapse, f"reader{secrets.token_hex(2)}", alias
                )
                reader = Reader(http, reader_access, room_id)
                rounds: list[dict[str, float]] = []
                for _ in range(args.rounds):
                    found = await one_round(args, http, city, gateway, senders, reader, room_id)
                    rounds.append(found)
                    print(json.dumps({k: round(v, 1) for k, v in found.items()}), flush=True)
        finally:
            await asyncio.to_thread(gateway.stop)
            await asyncio.to_thread(synapse.stop)
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    summary: dict[str, Any] = {f"{k}_msgs_per_s": round(v, 1) for k, v in medians.items()}
    summary["city_to_matrix_vs_direct"] = round(medians["city_to_matrix"] / medians["direct"], 2)
    summary["matrix_to_city_vs_direct"] = round(medians["matrix_to_city"] / medians["direct"], 2)
    summary["city_to_matrix_vs_direct_in_order"] = round(
        medians["city_to_matrix"] / medians["direct_in_order"], 2
    )
    summary |= {"messages": args.messages, "senders": args.senders, "rounds": args.rounds}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
