"""A WebSocket's handshake starts from the request head the HTTP protocol parsed
(``CityWebSocketProtocol.open_handshake``, ``edge/head.py``), not from the head written out
again and parsed by websockets: the request it makes is the one websockets' parser makes, the
heads that parser could refuse go to it as before, and through a real server the answers
(101, or a refusal) are byte for byte those of the old path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from typing import Any

import pytest
from websockets.http11 import Request
from websockets.server import ServerProtocol

from daarion_city.edge.protocol import CityWebSocketProtocol, parsed_request
from tests.support import Api

pytestmark = pytest.mark.timeout(60)

Head = tuple[bytes, bytes, list[tuple[bytes, bytes]]]
KEY = base64.b64encode(b"0123456789abcdef")


@pytest.fixture
def backend() -> str:
    return "sqlite"


def handshake_headers(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", KEY),
        (b"sec-websocket-version", b"13"),
        *extra,
    ]


def written_out(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head as uvicorn writes it for websockets (httptools_impl.handle_websocket_upgrade)."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def websockets_request(head: Head) -> Request | None:
    conn = ServerProtocol()
    conn.receive_data(written_out(*head))
    events = conn.events_received()
    if events and isinstance(events[0], Request):
        return events[0]
    assert conn.handshake_exc is not None
    return None


ACCEPTED: dict[str, Head] = {
    "plain": (b"GET", b"/ws/city/rooms/general?token=abc", handshake_headers()),
    "no query": (b"GET", b"/ws", handshake_headers()),
    "percent and odd path": (b"GET", b"/ws/%E2%82%AC/a;b?x=%20&y", handshake_headers()),
    "subprotocols": (b"GET", b"/ws", handshake_headers((b"sec-websocket-protocol", b"a, b"))),
    "repeated header": (
        b"GET",
        b"/ws",
        handshake_headers((b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")),
    ),
    "latin-1 value": (b"GET", b"/ws", handshake_headers((b"x-name", "Zoë".encode("latin-1")))),
    "utf-8 value": (b"GET", b"/ws", handshake_headers((b"x-name", "Zoë €".encode()))),
    "value padded": (b"GET", b"/ws", handshake_headers((b"x-pad", b" \t a b \t "))),
    "empty value": (b"GET", b"/ws", handshake_headers((b"x-empty", b""))),
    "tab inside value": (b"GET", b"/ws", handshake_headers((b"x-tab", b"a\tb"))),
    "content-length 0": (b"GET", b"/ws", handshake_headers((b"content-length", b"0"))),
    "token punctuation": (b"GET", b"/ws", handshake_headers((b"x-!#$%&'*+.^_`|~", b"1"))),
    "128 headers": (
        b"GET",
        b"/ws",
        handshake_headers(*((f"x-h{i}".encode(), b"v") for i in range(123))),
    ),
    "long line": (b"GET", b"/ws", handshake_headers((b"x-long", b"a" * 8000))),
    "not GET": (b"POST", b"/ws", handshake_headers()),  # websockets' accept refuses it later
    "no key": (b"GET", b"/ws", [(b"upgrade", b"websocket"), (b"connection", b"upgrade")]),
}

REFUSED_OR_PASSED_ON: dict[str, Head] = {
    "129 headers": (
        b"GET",
        b"/ws",
        handshake_headers(*((f"x-h{i}".encode(), b"v") for i in range(124))),
    ),
    "line over the cap": (b"GET", b"/ws", handshake_headers((b"x-long", b"a" * 8200))),
    "line at the cap": (b"GET", b"/ws", handshake_headers((b"x-long", b"a" * 8182))),
    "target over the cap": (b"GET", b"/" + b"a" * 8190, handshake_headers()),
    "content-length 5": (b"GET", b"/ws", handshake_headers((b"content-length", b"5"))),
    "two content-lengths": (
        b"GET",
        b"/ws",
        handshake_headers((b"content-length", b"0"), (b"content-length", b"1")),
    ),
    "transfer-encoding": (b"GET", b"/ws", handshake_headers((b"transfer-encoding", b"chunked"))),
    "control character": (b"GET", b"/ws", handshake_headers((b"x-bad", b"a\x01b"))),
    "delete character": (b"GET", b"/ws", handshake_headers((b"x-bad", b"a\x7fb"))),
    "newline": (b"GET", b"/ws", handshake_headers((b"x-bad", b"a\r\nx-evil: 1"))),
    "name with colon": (b"GET", b"/ws", handshake_headers((b"x:y", b"1"))),
    "name with space": (b"GET", b"/ws", handshake_headers((b"x y", b"1"))),
    "empty name": (b"GET", b"/ws", handshake_headers((b"", b"1"))),
    "non-ascii name": (b"GET", b"/ws", handshake_headers(("x-ë".encode(), b"1"))),
    "non-ascii target": (b"GET", "/ws/€".encode(), handshake_headers()),
    "space in target": (b"GET", b"/ws /x", handshake_headers()),
}


# Passed on though websockets' parser takes them: a line too near its cap to tell, and a name
# with a colon or a value with a line break (httptools gives neither), which the head written
# out turns into other headers.
UNSURE = {"line at the cap", "name with colon", "newline"}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_parsed_head_makes_the_request_websockets_makes(case: str) -> None:
    head = ACCEPTED[case]
    ours, theirs = parsed_request(*head), websockets_request(head)
    assert ours is not None
    assert theirs is not None
    assert (ours.method, ours.path, ours.protocol) == (theirs.method, theirs.path, theirs.protocol)
    assert list(ours.headers.raw_items()) == list(theirs.headers.raw_items())


@pytest.mark.parametrize("case", sorted(REFUSED_OR_PASSED_ON))
def test_heads_websockets_could_refuse_go_to_its_parser(case: str) -> None:
    head = REFUSED_OR_PASSED_ON[case]
    assert parsed_request(*head) is None
    if case not in UNSURE:
        assert websockets_request(head) is None


# --- through a real server ----------------------------------------------------------------


async def answer(
    api: Api, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """What the server writes in answer to a handshake: its head, then the first frame's
    first byte if one comes within a second (a 101), or all it writes before it closes (a
    refusal); "no answer" when nothing comes (websockets' parser refused the head)."""
    server = api.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(written_out(method, target, headers))
        try:
            async with asyncio.timeout(3):
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101"):
                    return head + await reader.read()
        except asyncio.IncompleteReadError as exc:
            return b"closed after " + exc.partial
        except TimeoutError:
            return b"no answer"
        try:  # a socket without a token waits for it in its first frame
            async with asyncio.timeout(1):
                return head + await reader.readexactly(1)
        except TimeoutError:
            return head
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def undated(answer: bytes) -> bytes:
    return re.sub(rb"(?i)\r\ndate: [^\r]*", b"", answer)


def old_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def passed_on(self: CityWebSocketProtocol, *args: Any) -> bool:
        return False

    monkeypatch.setattr(CityWebSocketProtocol, "open_handshake", passed_on)


async def test_the_answers_are_those_of_the_head_written_out(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = api.user("u_zoe", "Zoë").token.encode()
    room = b"/ws/city/rooms/general?token=" + token
    opened = 0
    calls: list[bool] = []
    original = CityWebSocketProtocol.open_handshake

    def counted(self: CityWebSocketProtocol, *args: Any) -> bool:
        taken = original(self, *args)
        calls.append(taken)
        return taken

    cases = [
        (b"GET", room, handshake_headers()),
        (b"GET", room, handshake_headers((b"sec-websocket-protocol", b"a, b"))),
        (b"GET", room, handshake_headers((b"x-name", "Zoë".encode("latin-1")))),
        (b"GET", room, handshake_headers((b"origin", b"http://example.com"))),
        (b"GET", b"/ws/city/rooms/general", handshake_headers()),  # no token: closed 4401
        (b"GET", b"/ws/city/nowhere", handshake_headers()),  # no such route
        (b"GET", room, handshake_headers((b"sec-websocket-version", b"8"))),
        (b"GET", room, [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"upgrade")]),
        (b"GET", room, handshake_headers((b"content-length", b"5"))),  # passed on: no answer
        (b"GET", room, handshake_headers((b"x-bad", b"a\x01b"))),  # refused by httptools
    ]
    for method, target, headers in cases:
        with monkeypatch.context() as patch:
            patch.setattr(CityWebSocketProtocol, "open_handshake", counted)
            new = await answer(api, method, target, headers)
        with monkeypatch.context() as patch:
            old_path(patch)
            old = await answer(api, method, target, headers)
        assert undated(new) == undated(old), (target, headers[-1])
        opened += new.startswith(b"HTTP/1.1 101")
    assert opened >= 4
    assert calls.count(True) >= 7  # the heads websockets' parser takes did not go through it


async def test_sockets_opened_from_the_parsed_head_work(api: Api) -> None:
    alice = api.user(f"u_{os.urandom(4).hex()}", "Alice")
    async with alice.socket("general") as ws:
        state = await ws.expect("room.state")
        await alice.say("general", "hello")
        message = await ws.expect("room.message")
        assert message["message"]["body"] == "hello"
    assert state["event"] == "room.state"
