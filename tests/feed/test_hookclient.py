"""The webhooks' HTTP client against plain asyncio servers on loopback ports: the request it
writes, answers of every framing (length, chunked, closed), kept and replaced connections, and
what is not HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from daarion_city.feed.hookclient import HookClient, HookError

Answer = Callable[[bytes], bytes | None]  # a request's bytes -> the answer (None: close)


@contextlib.asynccontextmanager
async def server(answer: Answer, seen: list[bytes], close_after: int = 0) -> AsyncIterator[int]:
    """Answers each request (read up to its body, by Content-Length) with ``answer``; closes
    a connection after ``close_after`` answers (0: never)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answers = 0
        try:
            while not close_after or answers < close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                request = head + await reader.readexactly(length)
                seen.append(request)
                reply = answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                answers += 1
                if reply.startswith(b"HTTP/1.0"):
                    break  # its answer ends with the connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def test_the_request_and_answers_of_each_framing() -> None:
    seen: list[bytes] = []
    replies = iter(
        [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nnope",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nthe body ends with the connection",
        ]
    )
    async with server(lambda _: next(replies), seen) as port:
        client = HookClient(f"http://user:p%40ss@127.0.0.1:{port}/hooks?x=1")
        statuses = [await client.post(b'{"a":1}', {"X-City-Event-Id": f"e{i}"}) for i in range(6)]
        client.close()
    assert statuses == [204, 200, 500, 202, 201, 200]
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hooks?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Content-Type: application/json" in lines
    assert "X-City-Event-Id: e0" in lines
    assert "Authorization: Basic dXNlcjpwQHNz" in lines  # user:p@ss
    assert body == b'{"a":1}'


async def test_a_kept_connection_closed_by_the_server_is_replaced_at_once() -> None:
    """The server closes each connection after one answer, without saying so (as an idle
    timeout does): each next POST goes on a new connection, none fails."""
    seen: list[bytes] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with server(lambda _: ok, seen, close_after=1) as port:
        client = HookClient(f"http://127.0.0.1:{port}/")
        for pause in (0, 0.05, 0, 0.05):
            assert await client.post(b"{}", {}) == 200
            await asyncio.sleep(pause)
        client.close()
    assert len(seen) == 4


async def test_refused_reset_and_not_http_fail() -> None:
    seen: list[bytes] = []
    async with server(lambda _: None, seen) as port:  # reads, then closes without an answer
        client = HookClient(f"http://127.0.0.1:{port}/")
        with pytest.raises(ConnectionError):
            await client.post(b"{}", {})
    with pytest.raises(ConnectionRefusedError):
        await client.post(b"{}", {})  # nobody listens there any more
    async with server(lambda _: b"SMTP ready\r\n\r\n", seen) as port:
        client = HookClient(f"http://127.0.0.1:{port}/")
        with pytest.raises(HookError):
            await client.post(b"{}", {})
    with pytest.raises(ValueError, match="http"):
        HookClient("ftp://example.org/")


def test_on_uvloop_as_the_server_runs() -> None:
    """``daarion-city serve`` runs on uvloop, whose transports are not asyncio's classes."""
    import uvloop

    async def exchange() -> int:
        seen: list[bytes] = []
        async with server(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n", seen) as port:
            client = HookClient(f"http://127.0.0.1:{port}/")
            try:
                return await client.post(b"{}", {})
            finally:
                client.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(exchange()) == 204
