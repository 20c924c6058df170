"""The Matrix gateway against a real Synapse (from PyPI, SQLite, a loopback port)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daarion_city.config import Settings
from daarion_city.matrix.appservice import registration, registration_yaml
from daarion_city.matrix.ids import city_user_of, escape, is_valid_user_id, puppet_id, unescape
from tests.conftest import make_settings
from tests.support import Api, open_socket, run_server
from tests.synapse import SERVER_NAME, Synapse

AS_TOKEN = "as-" + secrets.token_hex(16)
HS_TOKEN = "hs-" + secrets.token_hex(16)
INTERNAL = "internal-" + secrets.token_hex(8)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def matrix_settings(**extra: Any) -> dict[str, Any]:
    return {
        "matrix_server_name": SERVER_NAME,
        "matrix_as_token": AS_TOKEN,
        "matrix_hs_token": HS_TOKEN,
        "matrix_gateway_internal_token": INTERNAL,
        **extra,
    }


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    reg = registration(Settings(**matrix_settings()))
    server = Synapse(tmp_path_factory.mktemp("synapse"), reg)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_overrides(synapse: Synapse) -> dict[str, Any]:
    return matrix_settings(matrix_homeserver_url=synapse.url, matrix_presence_min_interval=0.3)


def internal(api: Api, body: dict[str, Any], token: str | None = INTERNAL) -> Any:
    headers = {"X-Internal-Token": token} if token is not None else {}
    return api.http.post("/internal/matrix/presence/online", json=body, headers=headers)


# --- pure parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "city_id", ["u_alice", "u_ABC", "Олена", "a.b-c/d", "x=y", "__", "u_0f3a", "MiXeD_case_1"]
)
def test_puppet_mapping_is_reversible_and_valid(city_id: str) -> None:
    mxid = puppet_id(city_id, "example.org")
    assert mxid.startswith("@city_")
    localpart = mxid[1:].split(":")[0]
    assert set(localpart) <= set("abcdefghijklmnopqrstuvwxyz0123456789._=-/")
    assert unescape(escape(city_id)) == city_id
    assert city_user_of(mxid, "example.org") == city_id
    assert city_user_of(mxid, "other.org") is None


def test_puppet_mapping_has_no_collisions() -> None:
    ids = ["u_a", "u_A", "U_a", "u__a", "u=5fa", "u.a", "ua"]
    assert len({escape(i) for i in ids}) == len(ids)


def test_registration_yaml_round_trips() -> None:
    import yaml

    settings = Settings(**matrix_settings(matrix_as_url="http://127.0.0.1:7025"))
    parsed = yaml.safe_load(registration_yaml(registration(settings)))
    assert parsed["as_token"] == AS_TOKEN
    assert parsed["hs_token"] == HS_TOKEN
    assert parsed["url"] == "http://127.0.0.1:7025"
    assert parsed["rate_limited"] is False
    assert parsed["namespaces"]["users"] == [{"exclusive": True, "regex": r"@city_.*:localhost"}]
    # The rooms bridge's aliases are the bridge's alone (SPEC 6b, 12).
    assert parsed["namespaces"]["aliases"] == [{"exclusive": True, "regex": r"#city_.*:localhost"}]
    assert parsed["sender_localpart"] == "city_bridge"


# --- against Synapse ----------------------------------------------------------------------------
async def test_city_presence_is_mirrored_to_synapse(api: Api, synapse: Synapse) -> None:
    alice = api.user("u_alice_" + secrets.token_hex(3), "Alice")
    mxid = puppet_id(alice.user_id, SERVER_NAME)
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "online")
        await ws.send({"event": "presence.heartbeat", "status": "away"})
        await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "unavailable")
        await ws.send({"event": "presence.heartbeat", "status": "online"})
        await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "online")
    await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "offline")


async def test_internal_endpoint_with_a_users_own_token(api: Api, synapse: Synapse) -> None:
    name = "bob" + secrets.token_hex(3)
    token = await asyncio.to_thread(synapse.register_user, name, "secret-pass-123")
    mxid = f"@{name}:{SERVER_NAME}"
    r = await internal(
        api, {"matrix_user_id": mxid, "status": "unavailable", "access_token": token}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "matrix_user_id": mxid, "status": "unavailable"}
    assert await asyncio.to_thread(synapse.presence, mxid, token, as_user=False) == "unavailable"
    # Someone else's user id with Bob's token: the homeserver refuses, and we say so.
    other = await internal(
        api,
        {"matrix_user_id": f"@someone:{SERVER_NAME}", "status": "online", "access_token": token},
    )
    assert other.status_code == 502
    assert other.json()["code"] == "matrix_error"
    assert other.json()["matrix_status"] in (401, 403)
    assert other.json()["errcode"].startswith("M_")


async def test_internal_endpoint_through_the_application_service(
    api: Api, synapse: Synapse
) -> None:
    mxid = puppet_id("u_carol_" + secrets.token_hex(3), SERVER_NAME)
    r = await internal(api, {"matrix_user_id": mxid, "status": "online", "status_msg": "тут"})
    assert r.status_code == 200, r.text
    assert await asyncio.to_thread(synapse.presence, mxid, AS_TOKEN) == "online"
    r = await internal(api, {"matrix_user_id": f"@stranger:{SERVER_NAME}", "status": "online"})
    assert r.status_code == 400
    assert r.json()["code"] == "not_in_namespace"


@pytest.mark.parametrize(
    ("body", "token", "status", "code"),
    [
        ({"matrix_user_id": "@city_x:localhost", "status": "online"}, "wrong", 401, "unauthorized"),
        ({"matrix_user_id": "@city_x:localhost", "status": "online"}, None, 401, "unauthorized"),
        (
            {"matrix_user_id": "@city_x:localhost", "status": "away"},
            INTERNAL,
            400,
            "invalid_status",
        ),
        ({"matrix_user_id": "city_x", "status": "online"}, INTERNAL, 400, "invalid_user_id"),
        (
            {"matrix_user_id": "@CAPS:localhost", "status": "online"},
            INTERNAL,
            400,
            "invalid_user_id",
        ),
    ],
)
async def test_internal_endpoint_rejects(
    api: Api, body: dict[str, str], token: str | None, status: int, code: str
) -> None:
    r = await internal(api, body, token)
    assert (r.status_code, r.json()["code"]) == (status, code)


async def test_homeserver_down_is_503_and_the_latest_state_arrives_when_it_is_back(
    api: Api, synapse: Synapse
) -> None:
    alice = api.user("u_down_" + secrets.token_hex(3), "Alice")
    mxid = puppet_id(alice.user_id, SERVER_NAME)
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "online")
        await asyncio.to_thread(synapse.stop)
        try:
            r = await internal(api, {"matrix_user_id": mxid, "status": "online"})
            assert r.status_code == 503
            assert r.json()["code"] == "homeserver_unavailable"
            await ws.send({"event": "presence.heartbeat", "status": "away"})
            await asyncio.sleep(1.0)  # the bridge tries, fails, backs off
        finally:
            await asyncio.to_thread(synapse.start)
        await asyncio.to_thread(synapse.wait_presence, mxid, AS_TOKEN, "unavailable", 40)


@pytest.fixture
async def slow_bridge(database_url: str, tmp_path: Path, synapse: Synapse) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        tmp_path,
        **matrix_settings(matrix_homeserver_url=synapse.url),
        # The burst below is a script's, by design: lift the per-socket presence limit.
        presence_write_rate=1000.0,
        presence_write_burst=1000,
    )
    async with run_server(settings) as server:
        api = Api(server)
        yield api
        await api.aclose()


async def test_a_burst_of_changes_makes_at_most_two_writes(
    slow_bridge: Api, synapse: Synapse
) -> None:
    api = slow_bridge
    bridge = api.server.resources.matrix.bridge  # type: ignore[union-attr]
    assert bridge is not None
    alice = api.user("u_burst_" + secrets.token_hex(3), "Alice")
    mxid = puppet_id(alice.user_id, SERVER_NAME)
    before = bridge.writes
    async with open_socket(api.server, "/ws/city/presence", token=alice.token) as ws:
        await ws.expect("presence.bulk_update")
        for i in range(100):  # 100 status changes within a second
            await ws.send(
                {"event": "presence.heartbeat", "status": "away" if i % 2 == 0 else "online"}
            )
            await asyncio.sleep(0.009)
        await ws.send({"event": "ping"})
        await ws.expect("pong")
        await asyncio.sleep(11)  # the default 10 s window passes: the latest state is written
        assert bridge.writes - before <= 2
        assert await asyncio.to_thread(synapse.presence, mxid, AS_TOKEN) == "online"


async def test_application_service_transactions(api: Api) -> None:
    url = "/_matrix/app/v1/transactions/txn1"
    puppet = puppet_id("u_dana", SERVER_NAME)
    body = {
        "events": [],
        "ephemeral": [
            {"type": "m.presence", "sender": puppet, "content": {"presence": "unavailable"}},
            {
                "type": "m.presence",
                "sender": "@stranger:localhost",
                "content": {"presence": "online"},
            },
        ],
    }
    assert (await api.http.put(url, json=body)).status_code == 401
    assert (
        await api.http.put(url, json=body, headers={"Authorization": "Bearer nope"})
    ).status_code == 403
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    r = await api.http.put(url, json=body, headers=headers)
    assert (r.status_code, r.json()) == (200, {})
    appservice = api.server.resources.matrix.appservice  # type: ignore[union-attr]
    assert appservice.matrix_presence == {puppet: {"presence": "unavailable"}}
    # The same txnId again is acknowledged and not processed twice.
    body["ephemeral"][0]["content"] = {"presence": "offline"}
    r = await api.http.put(url, json=body, params={"access_token": HS_TOKEN})
    assert r.status_code == 200
    assert appservice.matrix_presence[puppet] == {"presence": "unavailable"}
    r = await api.http.get(f"/_matrix/app/v1/users/{puppet}", headers=headers)
    assert r.status_code == 200
    r = await api.http.get("/_matrix/app/v1/users/@stranger:localhost", headers=headers)
    assert r.status_code == 404


def test_cli_prints_the_registration(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    env = {
        **os.environ,
        "CITY_DATA_DIR": str(tmp_path),
        "MATRIX_SERVER_NAME": "city.example",
        "MATRIX_AS_URL": "http://10.0.0.5:7025",
        "MATRIX_AS_TOKEN": AS_TOKEN,
    }
    env.pop("MATRIX_HS_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-m", "daarion_city", "matrix-registration"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    reg = yaml.safe_load(out.stdout)
    assert reg["as_token"] == AS_TOKEN  # taken from the settings
    assert len(reg["hs_token"]) >= 32  # generated, and the operator is told
    assert "MATRIX_HS_TOKEN" in out.stderr
    assert reg["url"] == "http://10.0.0.5:7025"
    assert reg["namespaces"]["users"][0]["regex"] == r"@city_.*:city\.example"


# --- ids that end in a newline (issue 18, finding 13) --------------------------------------------
def test_a_matrix_id_with_a_trailing_newline_is_no_user_id() -> None:
    mxid = puppet_id("u_alice", SERVER_NAME)
    assert is_valid_user_id(mxid)
    assert city_user_of(mxid, SERVER_NAME) == "u_alice"
    for bad in (mxid + "\n", mxid + "\x00", "\n" + mxid):
        assert not is_valid_user_id(bad), bad
        assert city_user_of(bad, SERVER_NAME) is None, bad


async def test_the_gateway_refuses_a_matrix_id_with_a_trailing_newline(tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'city.sqlite3'}",
        tmp_path / "data",
        # Nothing listens there: every answer below is given before the homeserver is asked.
        **matrix_settings(matrix_homeserver_url="http://127.0.0.1:9"),
    )
    puppet = puppet_id("u_alice", SERVER_NAME)
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.base_url) as h:
        r = await h.post(
            "/internal/matrix/presence/online",
            json={"matrix_user_id": puppet + "\n", "status": "online"},
            headers={"X-Internal-Token": INTERNAL},
        )
        assert (r.status_code, r.json()["code"]) == (400, "invalid_user_id"), r.text
        hs = {"Authorization": f"Bearer {HS_TOKEN}"}
        r = await h.get(f"/_matrix/app/v1/users/{puppet}%0A", headers=hs)
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
        r = await h.get(f"/_matrix/app/v1/users/{puppet}", headers=hs)
        assert r.status_code == 200
