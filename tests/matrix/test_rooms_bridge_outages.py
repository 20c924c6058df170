"""The Matrix rooms bridge through outages (SPEC 6b): a `daarion-city serve` on PostgreSQL and a
real Synapse, each stopped in turn.

- Synapse stopped while city messages are posted (each answered at once), then started: they
  arrive in the Matrix room in order, once each.
- The gateway killed with ``kill -9`` right after Matrix messages were sent, and kept down while
  Synapse retries their transactions, then started again: each is imported once.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from daarion_city.config import Settings
from daarion_city.matrix.appservice import registration
from daarion_city.matrix.ids import puppet_id
from tests.cluster import SECRET, Instance, token
from tests.matrix.test_rooms_bridge import AS_TOKEN, HS_TOKEN, MatrixUser, texts, until
from tests.synapse import SERVER_NAME, Synapse


@pytest.fixture
def backend() -> str:
    return "postgresql"


async def test_outages_lose_nothing_and_repeat_nothing(database_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "CITY_JWT_SECRET": SECRET,
        "CITY_DATA_DIR": str(tmp_path / "data"),
        "CITY_MESSAGE_RATE": "1000",
        "CITY_MESSAGE_BURST": "1000",
        "MATRIX_SERVER_NAME": SERVER_NAME,
        "MATRIX_AS_TOKEN": AS_TOKEN,
        "MATRIX_HS_TOKEN": HS_TOKEN,
        "MATRIX_BRIDGE_ROOMS": "general",
        "MATRIX_BRIDGE_POLL": "0.2",
        "LOG_LEVEL": "warning",
    }
    gateway = Instance("bridge", env, tmp_path)
    gateway.env["MATRIX_AS_URL"] = gateway.base_url
    reg = registration(
        Settings(
            matrix_server_name=SERVER_NAME,
            matrix_as_token=AS_TOKEN,
            matrix_hs_token=HS_TOKEN,
            matrix_as_url=gateway.base_url,
        )
    )
    (tmp_path / "synapse").mkdir()
    synapse = Synapse(tmp_path / "synapse", reg)
    gateway.env["MATRIX_HOMESERVER_URL"] = synapse.url
    await asyncio.to_thread(synapse.start)
    try:
        await asyncio.to_thread(gateway.start)
        alice_id = "u_alice_" + secrets.token_hex(3)
        headers = {"Authorization": f"Bearer {token(alice_id, 'Alice')}"}
        puppet = puppet_id(alice_id, SERVER_NAME)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as city:

            async def mapped() -> Any:
                return (await city.get("/city/rooms/general")).json()["matrix_room_alias"]

            alias = await until(mapped, "the mapping of general", 60)
            async with MatrixUser(synapse, "mx" + secrets.token_hex(4)) as bob:
                room_id = await bob.join(alias)

                # 1. The homeserver is down: the city answers at once, and Matrix gets it all
                # later, in order, once.
                await asyncio.to_thread(synapse.stop)
                for i in range(10):
                    r = await city.post(
                        "/city/rooms/general/messages",
                        json={"body": f"outage {i}"},
                        headers=headers,
                    )
                    assert r.status_code == 201, r.text
                await asyncio.to_thread(synapse.start)

                async def delivered() -> Any:
                    got = [b for s, b in texts(await bob.events(room_id)) if s == puppet]
                    return got if len(got) >= 10 else None

                got = await until(delivered, "the messages posted while Synapse was down", 60)
                assert got == [f"outage {i}" for i in range(10)]

                # 2. The gateway is killed right after Matrix messages were sent, and stays
                # down while Synapse retries; started again, it imports each once.
                for i in range(5):
                    await bob.send(room_id, {"msgtype": "m.text", "body": f"from matrix {i}"})
                await asyncio.to_thread(gateway.kill)
                for i in range(5, 10):
                    await bob.send(room_id, {"msgtype": "m.text", "body": f"from matrix {i}"})
                await asyncio.sleep(1.0)  # Synapse fails to push, and backs off
                await asyncio.to_thread(gateway.start)

                async def imported() -> Any:
                    r = await city.get("/city/rooms/general/messages", params={"limit": 100})
                    bodies = [
                        m["body"]
                        for m in r.json()["messages"]
                        if m["author_user_id"] == bob.client.user_id
                    ]
                    return bodies if len(bodies) >= 10 else None

                bodies = await until(imported, "the Matrix messages after the restart", 120)
                await asyncio.sleep(1.0)  # a late repeat would show now
                r = await city.get("/city/rooms/general/messages", params={"limit": 100})
                bodies = [
                    m["body"]
                    for m in r.json()["messages"]
                    if m["author_user_id"] == bob.client.user_id
                ]
                assert bodies == [f"from matrix {i}" for i in range(10)]
                # And none of it went back to Matrix as a puppet's message.
                events = await bob.events(room_id)
                assert [b for s, b in texts(events) if s == puppet] == [
                    f"outage {i}" for i in range(10)
                ]
    finally:
        await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(synapse.stop)
