"""Store faults under load: PostgreSQL, then Redis, stopped for 10 s while clients keep sending.

- PostgreSQL (a private server, so the machine's one that other tests share is left alone):
  sends answer 503 ``unavailable`` within 2 s while it is down, nothing acknowledged is lost,
  and sends succeed again within 5 s of its return, without restarting the service; readyz
  follows it.
- Redis (two instances sharing PostgreSQL and a private Redis): sends on A are acknowledged all
  along; a socket on B gets every message, each ``seq`` once and in order, once Redis is back;
  presence is back within one heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cluster import SECRET, Instance, PostgresServer, RedisServer, stored_messages, token

OUTAGE = 10.0  # seconds each store is down
ANSWER_BOUND = 2.0  # a send answers (503) within this while the database is down
RECOVERY_BOUND = 5.0  # sends succeed again within this of the database's return
HEARTBEAT = 2.0  # PRESENCE_HEARTBEAT_INTERVAL of the Redis test


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CITY_JWT_SECRET": SECRET,
        "CITY_DATA_DIR": str(tmp_path / "data"),
        "CITY_MESSAGE_RATE": "100000",
        "CITY_MESSAGE_BURST": "100000",
        "CITY_WS_SEND_QUEUE": "20000",
        "CITY_WS_CONNECT_RATE": "1000",
        "CITY_WS_CONNECT_BURST": "1000",
        "LOG_LEVEL": "warning",
    }


@dataclass
class Outcome:
    user: str
    cmid: str
    start: float
    end: float
    status: int  # HTTP status; 201 for a WebSocket ack, 503 for an ``unavailable`` error frame
    code: str | None = None
    message: dict[str, Any] | None = None


@dataclass
class Load:
    """Clients that keep sending, one send in flight each, until ``stop`` is set."""

    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def of(self, user: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.user == user]

    def acked(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(o.user, o.cmid): o.message for o in self.outcomes if o.message is not None}

    def ack_count(self, user: str) -> int:
        return sum(o.status == 201 for o in self.of(user))

    async def wait_acks(self, users: list[str], more: int, timeout: float = 20) -> None:
        """Until every user has ``more`` acknowledgements more than now."""
        goal = {u: self.ack_count(u) + more for u in users}
        async with asyncio.timeout(timeout):
            while any(self.ack_count(u) < goal[u] for u in users):
                self.raise_failures()
                await asyncio.sleep(0.02)

    def raise_failures(self) -> None:
        for task in self.tasks:
            if task.done():
                task.result()

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.raise_failures_quietly()

    def raise_failures_quietly(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def http_sender(
    inst: Instance, user: str, room: str, load: Load, pause: float = 0.01
) -> None:
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=30) as http:
        n = 0
        while not load.stop.is_set():
            cmid = f"{user}-{n}"
            n += 1
            start = time.monotonic()
            r = await http.post(
                f"/city/rooms/{room}/messages",
                json={"body": f"{user} {cmid}", "client_msg_id": cmid},
                headers=headers,
            )
            end = time.monotonic()
            body = r.json()
            load.outcomes.append(
                Outcome(
                    user,
                    cmid,
                    start,
                    end,
                    r.status_code,
                    body.get("code"),
                    body if r.status_code == 201 else None,
                )
            )
            await asyncio.sleep(pause)


async def ws_sender(inst: Instance, user: str, room: str, load: Load, pause: float = 0.01) -> None:
    """Sends over one room socket, which must stay open through the outage."""
    url = inst.ws_url(f"/ws/city/rooms/{room}?token={token(user)}")
    async with connect(url, max_size=None, open_timeout=5, compression=None) as ws:
        n = 0
        while not load.stop.is_set():
            cmid = f"{user}-{n}"
            n += 1
            start = time.monotonic()
            frame = {"event": "room.message.send", "body": f"{user} {cmid}", "client_msg_id": cmid}
            await ws.send(orjson.dumps(frame).decode())
            while True:
                data = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if data.get("client_msg_id") == cmid:
                    break
                assert data.get("event") != "error", data
            end = time.monotonic()
            if data["event"] == "room.message.ack":
                load.outcomes.append(Outcome(user, cmid, start, end, 201, None, data["message"]))
            else:
                assert data["event"] == "error", data
                status = 503 if data["code"] == "unavailable" else 500
                load.outcomes.append(Outcome(user, cmid, start, end, status, data["code"]))
            await asyncio.sleep(pause)


async def create_room(inst: Instance, slug: str) -> str:
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10) as http:
        r = await http.post(
            "/city/rooms",
            json={"slug": slug, "name": slug.title()},
            headers={"Authorization": f"Bearer {token('u_owner')}"},
        )
        assert r.status_code == 201, r.text
        room_id: str = r.json()["id"]
        return room_id


async def settle(inst: Instance, room: str, load: Load) -> dict[tuple[str, str], dict[str, Any]]:
    """Send again (same user, same ``client_msg_id``) every send that was not acknowledged,
    until it is; answer every acknowledgement."""
    acked = load.acked()
    unacked = {(o.user, o.cmid) for o in load.outcomes} - set(acked)
    lanes = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10) as http:

        async def again(user: str, cmid: str) -> None:
            async with lanes, asyncio.timeout(10):
                while True:
                    r = await http.post(
                        f"/city/rooms/{room}/messages",
                        json={"body": f"{user} {cmid}", "client_msg_id": cmid},
                        headers={"Authorization": f"Bearer {token(user)}"},
                    )
                    if r.status_code == 201:
                        acked[user, cmid] = r.json()
                        return
                    assert r.status_code == 503, r.text
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(again(user, cmid) for user, cmid in unacked))
    return acked


def check_stored(
    rows: list[asyncpg.Record], acked: dict[tuple[str, str], dict[str, Any]], sent: set[Any]
) -> None:
    stored = {(r["author_user_id"], r["client_msg_id"]): (r["id"], r["seq"]) for r in rows}
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1)), "seq has gaps or repeats"
    assert len(stored) == len(rows), "a client_msg_id stored twice"
    missing = [k for k, m in acked.items() if stored.get(k) != (m["id"], m["seq"])]
    assert not missing, f"acknowledged, then not in the database as acknowledged: {missing[:10]}"
    assert set(stored) == sent, set(stored) ^ sent


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_instance(postgres: PostgresServer, tmp_path: Path) -> Iterator[Instance]:
    env = {
        **base_env(tmp_path),
        "DATABASE_URL": postgres.url,
        # Every database call is bounded by this; a send must answer within 2 s.
        "DATABASE_TIMEOUT": "1",
    }
    inst = Instance("pg-fault", env, tmp_path)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


async def readyz(inst: Instance) -> tuple[int, float]:
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=10) as http:
        status = (await http.get("/readyz")).status_code
    return status, time.monotonic() - start


@contextlib.asynccontextmanager
async def running(load: Load) -> AsyncIterator[Load]:
    try:
        yield load
    finally:
        await load.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_stopped_for_10_s_under_load(
    postgres: PostgresServer, pg_instance: Instance, mode: str
) -> None:
    inst = pg_instance
    room_id = await create_room(inst, "pgfault")
    http_users = [f"u_h{i}" for i in range(4)]
    ws_users = [f"u_w{i}" for i in range(2)]
    users = http_users + ws_users
    load = Load()
    load.tasks = [asyncio.create_task(http_sender(inst, u, "pgfault", load)) for u in http_users]
    load.tasks += [asyncio.create_task(ws_sender(inst, u, "pgfault", load)) for u in ws_users]
    async with running(load):
        await load.wait_acks(users, 5)
        stop_begin = time.monotonic()
        await asyncio.to_thread(postgres.stop, mode)
        stopped = time.monotonic()
        down_ready = []
        while time.monotonic() < stop_begin + OUTAGE:
            down_ready.append(await readyz(inst))
            load.raise_failures()
            await asyncio.sleep(0.5)
        restarting = time.monotonic()
        await asyncio.to_thread(postgres.start)
        back = time.monotonic()  # accepting connections again (a little before this)
        ready_again = None
        while time.monotonic() < back + RECOVERY_BOUND + 1:
            status, _ = await readyz(inst)
            if status == 200 and ready_again is None:
                ready_again = time.monotonic()
            await asyncio.sleep(0.05)
        load.raise_failures()
        await load.wait_acks(users, 3)
    outcomes = load.outcomes

    # Readiness follows the database.
    assert down_ready
    assert all(s == 503 and t <= ANSWER_BOUND for s, t in down_ready), down_ready
    assert ready_again is not None
    assert ready_again - back <= RECOVERY_BOUND, ready_again
    # Nothing but an acknowledgement or a typed 503, ever.
    odd = [o for o in outcomes if (o.status, o.code) not in ((201, None), (503, "unavailable"))]
    assert not odd, odd[:5]
    # While it is down every send answers 503 within 2 s (also those caught in flight).
    overlapping = [o for o in outcomes if o.end >= stop_begin and o.start <= restarting]
    slow = [o for o in overlapping if o.end - o.start > ANSWER_BOUND]
    assert not slow, [(o.user, round(o.end - o.start, 2)) for o in slow[:5]]
    during = [o for o in outcomes if o.start >= stopped and o.end <= restarting]
    wrong = [(o.user, o.cmid, o.start - stopped, o.status) for o in during if o.status != 503]
    assert not wrong, wrong[:5]
    for user in users:
        assert sum(o.start >= stopped and o.end <= restarting for o in load.of(user)) >= 3, user
    # Sends succeed again within 5 s of its return, with no restart of the service.
    recovered = {}
    for user in users:
        after = [o for o in load.of(user) if o.status == 201 and o.start >= back]
        assert after, f"{user}: no send succeeded after PostgreSQL came back"
        recovered[user] = after[0].end - back
        assert recovered[user] <= RECOVERY_BOUND, (user, recovered[user])
        late = [o for o in load.of(user) if o.start >= back + RECOVERY_BOUND and o.status != 201]
        assert not late, late[:5]
    assert inst.proc is not None
    assert inst.proc.poll() is None

    # Nothing acknowledged is lost; each send that got a 503 may or may not have committed
    # (the connection can die after COMMIT was sent): sent again with its client_msg_id, it is
    # stored exactly once.
    acked = await settle(inst, "pgfault", load)
    rows = await stored_messages(postgres.url, room_id)
    check_stored(rows, acked, {(o.user, o.cmid) for o in outcomes})
    failed = sum(o.status == 503 for o in outcomes)
    print(
        f"postgres {mode}: {len(outcomes)} sends, {failed} answered 503 (slowest "
        f"{max(o.end - o.start for o in overlapping):.3f}s), readyz back "
        f"{ready_again - back:.2f}s and sends back {max(recovered.values()):.2f}s after "
        f"PostgreSQL; {len(rows)} rows"
    )


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture
def backend() -> str:
    return "postgresql"


@pytest.fixture
def cluster(
    database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[Instance, Instance]]:
    env = {
        **base_env(tmp_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "CITY_INSTANCES": "2",
        "PRESENCE_TTL": str(HEARTBEAT * 3),
        "PRESENCE_SWEEP_INTERVAL": "0.5",
        "PRESENCE_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    }
    a = Instance("redis-a", env, tmp_path)
    b = Instance("redis-b", env, tmp_path)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


async def heartbeats(ws: ClientConnection, interval: float, seen: list[dict[str, Any]]) -> None:
    """A presence client: a heartbeat every ``interval`` seconds, as ``/city/config`` advises;
    it records what the server sends."""

    async def reader() -> None:
        async for raw in ws:
            seen.append({**orjson.loads(raw), "_at": time.monotonic()})

    read = asyncio.create_task(reader())
    try:
        while True:
            await ws.send(orjson.dumps({"event": "presence.heartbeat"}).decode())
            await asyncio.sleep(interval)
    finally:
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)


async def online(inst: Instance) -> set[str]:
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=5) as http:
        r = await http.get("/city/presence")
    if not r.is_success:
        return set()
    return {u["user_id"] for u in r.json()["users"] if u["status"] == "online"}


async def members_online(inst: Instance, room: str) -> int:
    async with httpx.AsyncClient(base_url=inst.base_url, timeout=5) as http:
        r = await http.get(f"/city/rooms/{room}")
    return int(r.json()["members_online"]) if r.is_success else -1


@pytest.mark.timeout(90)
async def test_redis_stopped_for_10_s_under_load(
    cluster: tuple[Instance, Instance], redis_server: RedisServer, database_url: str
) -> None:
    a, b = cluster
    room_id = await create_room(a, "redisfault")
    async with httpx.AsyncClient(base_url=a.base_url, timeout=5) as http:
        interval = (await http.get("/city/config")).json()["presence_heartbeat_interval"]
    assert interval == HEARTBEAT
    senders = [f"u_s{i}" for i in range(3)]
    watcher_url = b.ws_url(f"/ws/city/rooms/redisfault?token={token('u_bob')}")
    async with (
        connect(watcher_url, max_size=None, open_timeout=5, compression=None) as on_b,
        connect(
            a.ws_url(f"/ws/city/rooms/redisfault?token={token('u_carol')}"),
            max_size=None,
            open_timeout=5,
            compression=None,
        ) as on_a,
        connect(
            a.ws_url(f"/ws/city/presence?token={token('u_alice')}"), open_timeout=5
        ) as alice_presence,
        connect(
            b.ws_url(f"/ws/city/presence?token={token('u_bob')}"), open_timeout=5
        ) as bob_presence,
    ):
        state = orjson.loads(await asyncio.wait_for(on_b.recv(), 5))
        assert state["event"] == "room.state"
        assert state["last_seq"] == 0
        assert orjson.loads(await asyncio.wait_for(on_a.recv(), 5))["event"] == "room.state"
        frames: list[dict[str, Any]] = []
        frames_a: list[dict[str, Any]] = []  # with the time each arrived

        async def watch() -> None:
            async for raw in on_b:
                frames.append(orjson.loads(raw))

        async def watch_a() -> None:
            async for raw in on_a:
                frames_a.append({**orjson.loads(raw), "_at": time.monotonic()})

        alice_seen: list[dict[str, Any]] = []
        bob_seen: list[dict[str, Any]] = []
        background = [
            asyncio.create_task(watch()),
            asyncio.create_task(watch_a()),
            asyncio.create_task(heartbeats(alice_presence, interval, alice_seen)),
            asyncio.create_task(heartbeats(bob_presence, interval, bob_seen)),
        ]
        load = Load()
        load.tasks = [
            asyncio.create_task(http_sender(a, u, "redisfault", load, pause=0.05)) for u in senders
        ]
        try:
            async with running(load):
                await load.wait_acks(senders, 5)
                async with asyncio.timeout(5):
                    while await online(a) != {"u_alice", "u_bob"}:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                redis_server.stop()
                down = time.monotonic()
                while time.monotonic() < down + OUTAGE:
                    load.raise_failures()
                    await asyncio.sleep(0.1)
                redis_server.start()
                up = time.monotonic()
                # Presence is back within one heartbeat interval, on both instances, and so is
                # the room's occupancy (in Redis too): bob's socket on B and carol's on A.
                back: dict[str, float] = {}
                async with asyncio.timeout(interval * 4):
                    while len(back) < 3:
                        for inst in (a, b):
                            if inst.name not in back and await online(inst) == {"u_alice", "u_bob"}:
                                back[inst.name] = time.monotonic() - up
                        if "room" not in back and await members_online(a, "redisfault") == 2:
                            back["room"] = time.monotonic() - up
                        await asyncio.sleep(0.05)
                await load.wait_acks(senders, 5)
            outcomes = load.outcomes
            assert all(o.status == 201 for o in outcomes), [o for o in outcomes if o.status != 201]
            during = [o for o in outcomes if o.start >= down and o.end <= up]
            assert len(during) >= 3 * len(senders), len(during)
            assert max(back.values()) <= interval, back

            # The socket on B gets every message, each seq once and in order.
            acked = load.acked()
            top = max(m["seq"] for m in acked.values())
            async with asyncio.timeout(15):
                while not any(  # noqa: ASYNC110
                    f.get("event") == "room.message" and f["message"]["seq"] == top for f in frames
                ):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # anything repeated after the last one would show now
            got = [f["message"] for f in frames if f.get("event") == "room.message"]
            assert [m["seq"] for m in got] == list(range(1, top + 1))
            by_seq = {m["seq"]: m for m in acked.values()}
            assert all(by_seq[m["seq"]]["id"] == m["id"] for m in got)
            # On A, where they were posted, the messages committed while Redis was away arrived
            # while it was away: an instance's own sockets do not wait for the bus.
            got_a = [f for f in frames_a if f.get("event") == "room.message"]
            assert [f["message"]["seq"] for f in got_a] == list(range(1, top + 1))
            at_a = {f["message"]["seq"]: f["_at"] for f in got_a}
            late = [
                (o.message["seq"], round(at_a[o.message["seq"]] - up, 2))
                for o in during
                if o.message is not None and at_a[o.message["seq"]] > up
            ]
            assert not late, late
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    rows = await stored_messages(database_url, room_id)
    check_stored(rows, acked, {(o.user, o.cmid) for o in outcomes})
    updates_after = [
        f
        for seen in (alice_seen, bob_seen)
        for f in seen
        if f.get("event") == "presence.update" and f["_at"] >= up
    ]
    # Updates published while Redis was away are lost to the other instance, so each presence
    # socket gets a whole new snapshot after the return; snapshot + updates end with both online.
    for seen in (alice_seen, bob_seen):
        frames_after = [f for f in seen if f["_at"] >= up]
        bulks = [i for i, f in enumerate(frames_after) if f.get("event") == "presence.bulk_update"]
        assert bulks, [f.get("event") for f in frames_after]
        view = {u["user_id"]: u["status"] for u in frames_after[bulks[-1]]["users"]}
        for f in frames_after[bulks[-1] + 1 :]:
            if f.get("event") == "presence.update":
                view[f["user_id"]] = f["status"]
        assert view == {"u_alice": "online", "u_bob": "online"}, (
            view,
            [
                (
                    round(f["_at"] - up, 2),
                    f.get("event"),
                    f.get("user_id"),
                    f.get("status"),
                    f.get("users"),
                )
                for f in seen
                if f["_at"] >= up - 12
            ],
        )
    print(
        f"redis: {len(outcomes)} sends all acknowledged ({len(during)} while Redis was down), "
        f"{top} messages reached B in order; presence and occupancy back after "
        f"{', '.join(f'{k} {v:.2f}s' for k, v in back.items())}; "
        f"{len(updates_after)} presence.update frames after the return"
    )
