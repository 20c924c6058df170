"""The request head's caps, through raw sockets against the real server: its size
(``CITY_MAX_HEADER_BYTES``) and header count (``CITY_MAX_HEADERS``) answer 431 and close, and
the time to receive it (``CITY_HEADER_TIMEOUT``, 1 s here) answers 408 and closes, on a new
connection and on a keep-alive connection's next request alike."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from tests.support import Api, Server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the head is read before any database is involved


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"city_header_timeout": 1.0}


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return orjson.loads(self.body)


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> Answer:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True when the server ends the connection within ``timeout`` (nothing more is read)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@contextlib.asynccontextmanager
async def connection(server: Server) -> Any:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def write_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write as fast as the server reads; a server that hangs up ends the writing."""
    with contextlib.suppress(ConnectionError):
        for i in range(0, len(data), 65536):
            writer.write(data[i : i + 65536])
            await writer.drain()


async def send_slowly(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)


def request(*headers: str, path: str = "/healthz") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def refused(server: Server, data: bytes) -> Answer:
    """Send ``data`` on a new connection; the server's answer, after which it must hang up."""
    async with connection(server) as (reader, writer):
        pumping = asyncio.create_task(write_all(writer, data))
        answer = await read_answer(reader)
        assert answer.status in (408, 431), answer.status
        assert await closed_by_server(reader)
        pumping.cancel()
    return answer


async def test_a_one_megabyte_header_is_refused_with_431(server: Server) -> None:
    answer = await refused(server, request("X-Big: " + "a" * 1_000_000))
    assert answer.status == 431
    assert answer.json()["code"] == "headers_too_large"
    assert answer.headers["connection"] == "close"


async def test_ten_thousand_headers_are_refused_with_431(server: Server) -> None:
    answer = await refused(server, request(*(f"X-H{i}: v" for i in range(10_000))))
    assert answer.status == 431
    assert answer.json()["code"] == "headers_too_large"


async def test_an_unfinished_header_over_the_cap_is_refused_at_once(server: Server) -> None:
    """The head never ends: the server does not keep reading it (nor wait for the timeout)."""
    async with connection(server) as (reader, writer):
        writer.write(request()[:-2] + b"X-Big: " + b"a" * 100_000)  # no end of the head
        await writer.drain()
        answer = await read_answer(reader, timeout=0.9)  # the head timeout is 1 s
        assert answer.status == 431
        assert await closed_by_server(reader)


@pytest.mark.parametrize(
    "settings_overrides", [{"city_max_headers": 10, "city_max_header_bytes": 2048}]
)
async def test_the_caps_are_settings(server: Server) -> None:
    # request() sends Host itself: 10 headers in all pass, 11 do not.
    async with connection(server) as (reader, writer):
        writer.write(request(*(f"X-H{i}: v" for i in range(9))))
        assert (await read_answer(reader)).status == 200
    assert (await refused(server, request(*(f"X-H{i}: v" for i in range(10))))).status == 431
    async with connection(server) as (reader, writer):
        writer.write(request("X-Big: " + "a" * 1900))
        assert (await read_answer(reader)).status == 200
    assert (await refused(server, request("X-Big: " + "a" * 2100))).status == 431


async def test_the_counts_start_again_with_each_request_of_a_connection(server: Server) -> None:
    async with connection(server) as (reader, writer):
        for _ in range(3):  # 3 x 60 headers and 3 x 9 KB on one keep-alive connection
            writer.write(request(*(f"X-H{i}: {'v' * 150}" for i in range(60))))
            assert (await read_answer(reader)).status == 200


async def test_a_ten_kilobyte_cookie_still_works(api: Api) -> None:
    cookie = "; ".join(f"c{i}={'x' * 90}" for i in range(100))  # about 10 KB
    assert len(cookie) > 9000
    r = await api.http.get("/healthz", headers={"Cookie": cookie})
    assert r.status_code == 200
    alice = await api.guest("Alice")
    r = await api.http.get(
        "/city/rooms/general/messages", headers={**alice.headers, "Cookie": cookie}
    )
    assert r.status_code == 200


async def test_a_head_sent_one_byte_a_second_is_closed_after_the_timeout(server: Server) -> None:
    async with connection(server) as (reader, writer):
        sending = asyncio.create_task(send_slowly(writer, request(), 1.0))
        answer = await read_answer(reader, timeout=5)
        assert answer.status == 408
        assert answer.json()["code"] == "request_timeout"
        assert await closed_by_server(reader)
        assert not sending.done()  # closed while the head was still coming
        sending.cancel()


async def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
    server: Server,
) -> None:
    async with connection(server) as (reader, _):
        assert (await read_answer(reader, timeout=5)).status == 408
        assert await closed_by_server(reader)


async def test_a_keep_alive_connections_slow_next_request_is_closed(server: Server) -> None:
    async with connection(server) as (reader, writer):
        writer.write(request())
        assert (await read_answer(reader)).status == 200
        sending = asyncio.create_task(send_slowly(writer, request(), 1.0))
        answer = await read_answer(reader, timeout=5)
        assert answer.status == 408
        assert await closed_by_server(reader)
        sending.cancel()


async def test_a_slow_response_is_not_a_slow_head(server: Server) -> None:
    """The timeout is for the head only: a request whose answer takes longer (here a feed
    stream held open past it) keeps its connection."""
    async with connection(server) as (reader, writer):
        writer.write(request(path="/city/feed/stream"))
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in answer_head.split(b"\r\n")[0]
        assert not await closed_by_server(reader, timeout=2.5)


async def test_a_pipelined_request_over_the_cap_is_refused_after_the_first_is_answered(
    server: Server,
) -> None:
    """The second head starts in the middle of a read: its headers' sizes hold it to the cap."""
    async with connection(server) as (reader, writer):
        writer.write(request() + request("X-Big: " + "a" * 20_000))
        assert (await read_answer(reader)).status == 200
        assert (await read_answer(reader)).status == 431
        assert await closed_by_server(reader)


async def test_a_body_past_the_cap_in_the_heads_read_is_read_on(api: Api) -> None:
    """The cap is the head's: a post whose head and 20 KB body come in one write is served."""
    alice = await api.guest("Alice")
    body = orjson.dumps({"body": "ї" * 9000})
    head = request(
        f"Authorization: Bearer {alice.token}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        path="/city/rooms/general/messages",
    ).replace(b"GET ", b"POST ", 1)
    async with connection(api.server) as (reader, writer):
        writer.write(head + body)
        answer = await read_answer(reader)
        assert answer.status == 201, answer.body
        assert answer.json()["body"] == "ї" * 9000
