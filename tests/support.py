"""Test helpers: a real uvicorn server on a loopback port, HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from daarion_city.app import create_app
from daarion_city.app.wiring import Resources
from daarion_city.config import Settings
from daarion_city.edge.server import CityServer, server_config


@dataclass
class Server:
    settings: Settings
    host: str
    port: int
    uvicorn: uvicorn.Server
    resources: Resources

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}{path}"


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, port: int = 0, **options: Any) -> AsyncIterator[uvicorn.Server]:
    """Serve an ASGI app with uvicorn on a loopback port for the duration of the block."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, **options
    )
    async with serving(uvicorn.Server(config)) as server:
        yield server


@contextlib.asynccontextmanager
async def serving(server: uvicorn.Server) -> AsyncIterator[uvicorn.Server]:
    """Run a configured uvicorn server in this loop for the duration of the block."""
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped before starting")
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def eventually(check: Any, timeout: float, what: str) -> None:
    """Poll ``check()`` (sync or async) until it is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(what)  # pragma: no cover


@contextlib.asynccontextmanager
async def run_server(
    settings: Settings, services: list[str] | None = None, port: int = 0
) -> AsyncIterator[Server]:
    app = create_app(settings, services)
    config = server_config(app, settings, host="127.0.0.1", port=port, loop="none")
    async with serving(CityServer(config, app)) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Server(settings, "127.0.0.1", port, server, app.state.resources)


class Api:
    """An HTTP client bound to a server, with helpers for users."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.base_url, timeout=10)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def guest(self, name: str) -> User:
        r = await self.http.post("/auth/guest", json={"name": name})
        assert r.status_code == 201, r.text
        data = r.json()
        return User(self, data["user_id"], data["name"], data["token"])

    def user(self, user_id: str, name: str) -> User:
        issued = self.server.resources.auth.mint(user_id, name, 3600)
        return User(self, user_id, name, issued.token)


@dataclass
class User:
    api: Api
    user_id: str
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, path: str, json: Any = None) -> httpx.Response:
        return await self.api.http.post(path, json=json, headers=self.headers)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.api.http.get(path, params=params, headers=self.headers)

    async def say(self, room: str, body: str, client_msg_id: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"body": body}
        if client_msg_id is not None:
            payload["client_msg_id"] = client_msg_id
        r = await self.post(f"/city/rooms/{room}/messages", payload)
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    @contextlib.asynccontextmanager
    async def socket(self, room: str, **query: Any) -> AsyncIterator[Socket]:
        async with open_socket(
            self.api.server, f"/ws/city/rooms/{room}", token=self.token, **query
        ) as ws:
            yield ws

    @contextlib.asynccontextmanager
    async def presence(self) -> AsyncIterator[Socket]:
        """A presence socket of the user, past its opening ``presence.bulk_update``."""
        async with open_socket(self.api.server, "/ws/city/presence", token=self.token) as ws:
            await ws.expect("presence.bulk_update")
            yield ws


@contextlib.asynccontextmanager
async def open_socket(server: Server, path: str, **query: Any) -> AsyncIterator[Socket]:
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    url = server.ws_url(path) + (f"?{params}" if params else "")
    async with connect(url, max_size=None, open_timeout=5, compression=None) as ws:
        yield Socket(ws)


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send(orjson.dumps(frame).decode())
        else:
            await self.ws.send(frame)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        data: dict[str, Any] = orjson.loads(raw)
        return data

    async def expect(self, event: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``event`` (matching ``match``), skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {event} {match} within {timeout}s")
            frame = await self.recv(remaining)
            if frame.get("event") == event and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def silent(self, seconds: float = 0.3, *, ignore: tuple[str, ...] = ()) -> None:
        """Assert that no frame (other than ``ignore``d events) arrives for ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                frame = await self.recv(remaining)
            except TimeoutError:
                return
            assert frame.get("event") in ignore, f"unexpected frame {frame}"

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        await self.ws.wait_closed()
        return self.ws.close_code


def relation_scans(node: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """The scans of ``relation`` in a PostgreSQL plan (``EXPLAIN (FORMAT JSON)``), innermost
    first."""
    inner = [scan for child in node.get("Plans", []) for scan in relation_scans(child, relation)]
    return inner + ([node] if node.get("Relation Name") == relation else [])


@contextlib.asynccontextmanager
async def two_instances(settings: Any) -> AsyncIterator[tuple[Api, Api]]:
    """Two servers in this process, with the settings ``settings("a")`` and ``settings("b")``
    (one database and one Redis shared by both, for the cluster tests)."""
    async with run_server(settings("a")) as a, run_server(settings("b")) as b:
        api_a, api_b = Api(a), Api(b)
        try:
            yield api_a, api_b
        finally:
            await api_a.aclose()
            await api_b.aclose()
