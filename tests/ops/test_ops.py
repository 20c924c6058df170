"""Health, readiness, metrics, the client config, guests, the CLI and configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from daarion_city.app import create_app
from daarion_city.app.wiring import ConfigurationError
from daarion_city.config import Settings
from daarion_city.core.logs import mask_url
from daarion_city.identity.tokens import TokenAuthority, load_secret
from daarion_city.storage.migrate import head_revision
from tests.conftest import make_settings
from tests.support import Api, run_server


async def test_health_ready_metrics(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True}
    alice = await api.guest("Alice")
    await alice.say("science", "count me")
    async with alice.socket("science") as ws:
        await ws.expect("room.state")
        text = (await api.http.get("/metrics")).text
    assert "city_messages_total 1.0" in text
    assert 'city_http_requests_total{method="POST",status="201"}' in text
    assert "city_http_request_seconds_bucket" in text


async def test_request_ids_are_echoed(api: Api) -> None:
    r = await api.http.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await api.http.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"


async def test_unknown_routes_and_methods_have_typed_errors(api: Api) -> None:
    r = await api.http.get("/nowhere")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = await api.http.delete("/city/rooms")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"


async def test_guest_tokens(api: Api) -> None:
    r = await api.http.post("/auth/guest", json={"name": "  Олена  "})
    assert r.status_code == 201
    data = r.json()
    assert data["name"] == "Олена"
    assert data["user_id"].startswith("u_")
    assert data["expires_at"].endswith("Z")
    claims = jwt.decode(data["token"], options={"verify_signature": False})
    assert claims["sub"] == data["user_id"]
    for bad in ({"name": ""}, {"name": "   "}, {"name": "x" * 65}, {"name": "a\u0000"}, {}):
        assert (await api.http.post("/auth/guest", json=bad)).status_code == 422
    assert (await api.http.post("/auth/guest", content=b"not json")).status_code == 422


async def test_guests_can_be_disabled(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, city_allow_guests=False)
    async with run_server(settings) as server:
        api = Api(server)
        r = await api.http.post("/auth/guest", json={"name": "Alice"})
        assert r.status_code == 403
        assert r.json()["code"] == "guests_disabled"
        await api.aclose()


async def test_client_config(api: Api) -> None:
    config = (await api.http.get("/city/config")).json()
    assert config["presence_away_after"] == 300
    assert config["presence_ttl"] == 40
    assert 15 <= config["presence_heartbeat_interval"] <= 20


def test_generated_secret_survives_a_restart(tmp_path: Path) -> None:
    settings = Settings(city_data_dir=tmp_path, city_jwt_secret=None)
    first = load_secret(settings)
    assert load_secret(settings) == first
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o777 == 0o600
    token = TokenAuthority(first).mint("u_a", "A", 60).token
    assert TokenAuthority(load_secret(settings)).verify(token).user_id == "u_a"


def test_a_remembered_token_still_expires_and_a_forged_one_is_never_remembered() -> None:
    import time

    from daarion_city.core.errors import Unauthorized

    authority = TokenAuthority("s" * 32, cache_size=2)
    short = authority.mint("u_a", "A", 2).token  # exp is whole seconds: 1 to 2 s from now
    assert authority.verify(short).user_id == "u_a"
    assert authority.verify(short).user_id == "u_a"  # from the cache
    forged = TokenAuthority("t" * 32).mint("u_a", "A", 60).token
    for _ in range(2):
        with pytest.raises(Unauthorized):
            authority.verify(forged)
    for i in range(5):  # the cache stays bounded
        authority.verify(authority.mint(f"u_{i}", None, 60).token)
    time.sleep(2.1)  # past exp, whatever the fraction of the second it was minted in
    with pytest.raises(Unauthorized, match="expired"):
        authority.verify(short)


def test_instances_need_shared_backends(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        create_app(Settings(city_data_dir=tmp_path, city_instances=2))
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        create_app(Settings(city_data_dir=tmp_path, city_instances=2, redis_url="redis://x"))
    with pytest.raises(ConfigurationError, match="unknown services"):
        create_app(Settings(city_data_dir=tmp_path), ["nope"])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daarion_city", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_cli_token_migrate_and_check_config(database_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": database_url,
        "CITY_DATA_DIR": str(tmp_path),
        "CITY_JWT_SECRET": "cli-secret-0123456789-0123456789-xyz",
        "REDIS_URL": "",
    }
    out = _cli("token", "--user-id", "u_alice", "--name", "Alice", env=env)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), env["CITY_JWT_SECRET"], algorithms=["HS256"])
    assert claims["sub"] == "u_alice"
    assert claims["name"] == "Alice"
    migrated = _cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"revision {head_revision()}" in migrated.stdout
    assert _cli("migrate", env=env).returncode == 0  # idempotent
    config = _cli("check-config", env=env)
    assert config.returncode == 0, config.stderr
    assert "cli-secret" not in config.stdout
    assert '"city_jwt_secret": "********"' in config.stdout
    bad = _cli("check-config", env={**env, "CITY_INSTANCES": "3"})
    assert bad.returncode == 2


def test_check_config_masks_every_credential_in_a_url(tmp_path: Path) -> None:
    secrets_in_urls = {
        # password in the user part and again in the query string
        "DATABASE_URL": "postgresql://city:pg-pw-1111@db.example:5432/city"
        "?sslmode=require&password=pg-pw-2222",
        # a user part without password is often the key itself
        "REDIS_URL": "redis://redis-key-3333@cache.example:6379/0?api_key=rk-4444",
        "SECONDME_LLM_BASE_URL": "http://sk-live-5555@llm.example/v1?apikey=sk-6666",
        "AGENTS_SERVICE_URL": "https://agents.example/api?access_token=at-7777"
        "&sig=sg-8888&%74oken=tk-9999&sk-bare-1212#frag-1313",
        "MATRIX_HOMESERVER_URL": "https://:mx-pw-1414@hs.example",
        "MATRIX_AS_URL": "http://gw.example:7025/?x-custom-option=xc-1515",
    }
    env = {
        **secrets_in_urls,
        "CITY_DATA_DIR": str(tmp_path),
        "CITY_JWT_SECRET": "jwt-1616-0123456789-0123456789-abcdef",
    }
    out = _cli("check-config", env=env)
    assert out.returncode == 0, out.stderr
    markers = ["1111", "2222", "3333", "4444", "5555", "6666", "7777", "8888", "9999"]
    markers += ["1212", "1313", "1414", "1515", "1616"]
    leaked = [m for m in markers if m in out.stdout]
    assert not leaked, out.stdout
    shown = json.loads(out.stdout)
    # what is not a secret stays readable
    assert shown["database_url"] == (
        "postgresql://city:********@db.example:5432/city?sslmode=require&password=********"
    )
    assert shown["effective_database_url"].startswith("postgresql+asyncpg://city:********@db.")
    assert shown["redis_url"] == "redis://********@cache.example:6379/0?api_key=********"
    assert shown["secondme_llm_base_url"] == "http://********@llm.example/v1?apikey=********"
    assert shown["matrix_homeserver_url"] == "https://:********@hs.example"
    assert shown["agents_service_url"].startswith("https://agents.example/api?access_token=****")


M = "********"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://u:p%40ss/w@db/city", f"postgresql://u:{M}@db/city"),  # "/" in it
        ("redis://:pw@cache:6379/0?db=1&ssl=true", f"redis://:{M}@cache:6379/0?db=1&ssl=true"),
        (
            "http://h/v1?%70assword=x&API_KEY=y&sslmode=",
            f"http://h/v1?%70assword={M}&API_KEY={M}&sslmode=",
        ),
        ("http://h/?sk-abc#tok", f"http://h/?{M}#{M}"),
        ("sqlite+aiosqlite:////home/a@b/c.db", "sqlite+aiosqlite:////home/a@b/c.db"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_check_config_says_where_a_generated_secret_is(tmp_path: Path) -> None:
    env = {"CITY_DATA_DIR": str(tmp_path), "CITY_JWT_SECRET": "", "DATABASE_URL": ""}
    before = json.loads(_cli("check-config", env=env).stdout)["city_jwt_secret"]
    assert before is not None
    assert str(tmp_path / "jwt_secret") in before  # where it will be
    assert not (tmp_path / "jwt_secret").exists()  # checking the configuration writes nothing
    secret = load_secret(Settings(city_data_dir=tmp_path, city_jwt_secret=None))
    out = _cli("check-config", env=env)
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout
    shown = json.loads(out.stdout)["city_jwt_secret"]
    assert shown.startswith("********")
    assert str(tmp_path / "jwt_secret") in shown


def test_help_lists_every_command_in_plain_text() -> None:
    out = _cli("--help", env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for markup in ("``", "{", "}", "**", "`"):
        assert markup not in text, text
    commands = ["serve", "migrate", "token", "check-config", "matrix-registration"]
    for name in commands:
        line = next((ln for ln in text.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, f"{name} is not listed:\n{text}"
        assert len(line.split()) > 2, f"{name} has no description on its line:\n{text}"
        sub = _cli(name, "--help", env={})
        assert sub.returncode == 0, sub.stderr
        assert "``" not in sub.stdout


def test_cli_token_refuses_ids_and_names_the_service_would_refuse(tmp_path: Path) -> None:
    env = {
        "CITY_DATA_DIR": str(tmp_path),
        "CITY_JWT_SECRET": "cli-secret-0123456789-0123456789-xyz",
        "DATABASE_URL": "",
        "REDIS_URL": "",
    }
    for args in (
        ("--user-id", "ag_system", "--name", "System"),
        ("--user-id", "u alice"),
        ("--user-id", "u_alice", "--name", "ag_system"),
        ("--user-id", "u_alice", "--name", "\u200b\u200d"),
        ("--user-id", "u_alice", "--name", "Al\nice"),
        ("--user-id", "u_alice", "--name", "\u202eecila"),
        ("--user-id", "u_alice", "--ttl", str(10**30)),
    ):
        out = _cli("token", *args, env=env)
        assert (out.returncode, out.stdout) == (2, ""), (args, out.stdout, out.stderr)
        assert out.stderr.startswith("daarion-city: "), (args, out.stderr)
    out = _cli("token", "--user-id", "u_alice", "--name", "Олена 👨\u200d👩\u200d👧", env=env)
    assert out.returncode == 0, out.stderr


def test_default_rooms_must_be_slugs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CITY_DEFAULT_ROOMS"):
        create_app(Settings(city_data_dir=tmp_path, city_default_rooms="general,Lobby Room"))
