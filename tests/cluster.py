"""Real peers for the cluster tests: a Redis server of the test's own (so it can be stopped and
started) and `daarion-city serve` instances as separate processes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout}s")


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ping, 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Instance:
    """One `daarion-city serve` process."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, "CITY_PORT": str(self.port), "CITY_INSTANCE_ID": name}
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daarion_city", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 30, self.name)

    def kill(self) -> None:
        """kill -9: no clean shutdown, sockets left open in Redis and in clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class PostgresServer:
    """A PostgreSQL 15 server of the test's own (so it can be stopped and started under load,
    without touching the machine's server that other tests share).

    initdb and postgres refuse to run as root, so when the tests run as root both run as the
    ``postgres`` user on a data directory it owns, in a temporary directory of this server's own
    (pytest's ``tmp_path`` lies under a 0700 directory postgres cannot enter). The postmaster is
    this process's child (stopped by signal, reaped here); it listens on loopback TCP on a free
    port and on a unix socket in that directory."""

    BIN = Path(os.environ.get("TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
    SIGNALS: ClassVar[dict[str, signal.Signals]] = {
        "smart": signal.SIGTERM,
        "fast": signal.SIGINT,
        "immediate": signal.SIGQUIT,
    }

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dc-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def _user(self) -> dict[str, str]:
        return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _initdb(self) -> None:
        for path in (self.data, self.sockets):
            path.mkdir(mode=0o700)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.data, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        done = subprocess.run(
            [
                str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions",
            ],
            capture_output=True, timeout=120, check=False, cwd=self.root, **self._user,  # type: ignore[arg-type]
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout[-2000:]!r} {done.stderr[-2000:]!r}")
        self._initialised = True

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.log_tail()}")
        done = subprocess.run(
            [
                str(self.BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres",
            ],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return done.returncode == 0

    def start(self) -> None:
        if not self._initialised:
            self._initdb()
        assert self.proc is None, "already running"
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=100", "-c", "shared_buffers=32MB",
                ],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **self._user,  # type: ignore[arg-type]
            )  # fmt: skip
        try:
            wait_for(self._ready, 60, "postgres")
        except BaseException:
            self.stop("immediate")
            raise

    def stop(self, mode: str = "fast") -> None:
        """``fast``: backends are told to terminate (clients see an admin shutdown);
        ``immediate``: every process quits at once, as in a crash (recovery on the next start).
        Returns once the postmaster and its backends are gone."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.SIGNALS[mode])
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


SECRET = "cluster-secret-0123456789-0123456789"


def token(user_id: str, name: str | None = None, secret: str = SECRET) -> str:
    """A bearer token for an instance started with ``CITY_JWT_SECRET=SECRET``."""
    import jwt

    claims = {"sub": user_id, "name": name or user_id, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, secret, "HS256")


async def stored_messages(database_url: str, room_id: str) -> list[Any]:
    """The room's stored messages (id, seq, author, client_msg_id) in seq order, read straight
    from PostgreSQL: what the fault tests hold acknowledgements against."""
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return list(
            await conn.fetch(
                "SELECT id, seq, author_user_id, client_msg_id FROM city_room_messages "
                "WHERE room_id = $1 ORDER BY seq",
                room_id,
            )
        )
    finally:
        await conn.close()
