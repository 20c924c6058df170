"""An answer's head waits for its body (``edge/cork.py``), through raw sockets against the real
server: what must still go out at once does: a ``100 Continue`` before the body is sent, and a
streamed answer's head before its first chunk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.edge.test_request_head import connection, read_answer
from tests.support import Server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the writes of an answer do not depend on the store


async def test_answers_on_one_connection_each_arrive_whole(server: Server) -> None:
    async with connection(server) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await read_answer(reader)
            assert answer.status == 200
            assert answer.json()["status"] == "ok"


async def test_a_100_continue_goes_out_before_the_body_is_sent(server: Server) -> None:
    body = b'{"body": "hello"}'
    async with connection(server) as (reader, writer):
        writer.write(
            b"POST /city/rooms/science/messages HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        async with asyncio.timeout(5):  # the client waits for it before sending its body
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        answer = await read_answer(reader)
        assert answer.status == 401  # no token: the whole answer came after the 100


async def test_a_streamed_answers_head_comes_before_its_first_chunk(server: Server) -> None:
    async with connection(server) as (reader, writer):
        writer.write(b"GET /city/feed/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):  # no event is published: no chunk comes
            head = await reader.readuntil(b"\r\n\r\n")
        lines: list[Any] = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200")
        assert any(line.lower().startswith("content-type: text/event-stream") for line in lines)
