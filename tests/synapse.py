"""A real Synapse homeserver for the Matrix tests: installed by scripts/setup-synapse.sh into
.venv-synapse, configured on a loopback port with SQLite and our registration file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.cluster import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-synapse" / "bin" / "python"
SERVER_NAME = "localhost"


class Synapse:
    def __init__(self, workdir: Path, registration: dict[str, Any]) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "homeserver.yaml"
        reg_file = self.dir / "registration.yaml"
        reg_file.write_text(yaml.safe_dump(registration))
        subprocess.run(
            [
                str(PYTHON),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                SERVER_NAME,
                "--config-path",
                str(self.config),
                "--generate-config",
                "--report-stats=no",
            ],
            cwd=self.dir,
            check=True,
            capture_output=True,
            timeout=120,
        )
        config = yaml.safe_load(self.config.read_text())
        config["listeners"] = [
            {
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ]
        config["trusted_key_servers"] = []
        config["suppress_key_server_warning"] = True
        config["presence"] = {"enabled": True}
        config["app_service_config_files"] = [str(reg_file)]
        config["report_stats"] = False
        # The tests' Matrix users send in bursts; the bridge's puppets are not limited (rate_limited
        # false in the registration).
        many = {"per_second": 1000, "burst_count": 1000}
        config["rc_message"] = many
        config["rc_joins"] = {"local": many, "remote": many}
        config["rc_login"] = {"address": many, "account": many, "failed_attempts": many}
        config["rc_registration"] = many
        config["room_list_publication_rules"] = [{"action": "allow"}]
        self.shared_secret = config["registration_shared_secret"]
        self.config.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError((self.dir / "synapse.out").read_text()[-3000:])
        try:
            return httpx.get(self.url + "/_matrix/client/versions", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        with (self.dir / "synapse.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.config)],
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 90, "synapse")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def register_user(self, name: str, password: str) -> str:
        """A user with a password, through Synapse's shared-secret registration; returns a token."""
        subprocess.run(
            [
                str(ROOT / ".venv-synapse" / "bin" / "register_new_matrix_user"),
                "-c",
                str(self.config),
                "-u",
                name,
                "-p",
                password,
                "--no-admin",
                self.url,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        r = httpx.post(
            self.url + "/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": password,
            },
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def presence(self, user_id: str, token: str, *, as_user: bool = True) -> str:
        from urllib.parse import quote

        params = {"user_id": user_id} if as_user else None
        r = httpx.get(
            f"{self.url}/_matrix/client/v3/presence/{quote(user_id, safe='')}/status",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["presence"])

    def wait_presence(
        self, user_id: str, token: str, wanted: str, timeout: float = 40, **kw: Any
    ) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = self.presence(user_id, token, **kw)
            except httpx.HTTPError:
                seen = None
            if seen == wanted:
                return
            time.sleep(0.2)
        log = (self.dir / "synapse.out").read_text(errors="replace")[-1500:]
        raise AssertionError(f"{user_id} is {seen!r} on Synapse, not {wanted!r}\n{log}")
