"""No token reaches a log line, however the client encodes it: the server percent-decodes query
keys and values (``?%74oken=`` is ``?token=``), so the masking decodes them too."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest
from websockets.asyncio.client import connect

from daarion_city.core.logs import JsonFormatter, mask_secrets
from tests.support import Api

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend() -> str:
    return "sqlite"


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1XzEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def encode_all(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


def parts(token: str) -> list[str]:
    return [token, *token.split(".")]


async def test_a_percent_encoded_token_is_not_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    alice = await api.guest("Alice")
    token = alice.token
    authenticating = [
        f"%74oken={token}",  # the key encoded
        f"%74oken={encode_all(token)}",  # and the value
        f"t%6Fken={token.replace('.', '%2E')}",
        f"token={encode_all(token)}",
        f"since_seq=0&%74%6F%6B%65%6E={encode_all(token)}",
    ]
    for query in authenticating:
        url = api.server.ws_url(f"/ws/city/rooms/general?{query}")
        async with connect(url, open_timeout=5) as ws:
            state = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert state["event"] == "room.state", query  # the server took it as the token
    # Decoded twice, these are the token: the server does not take them, a reader of the log could.
    for query in (f"%2574oken={encode_all(encode_all(token))}", f"x={encode_all(token)}"):
        url = api.server.ws_url(f"/ws/city/rooms/general?{query}")
        with contextlib.suppress(Exception):
            async with connect(url, open_timeout=5):
                pass
    await api.http.get(f"/city/rooms/{encode_all(token)}?%74oken={encode_all(token)}")

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    urls = [line for line in lines if "/ws/city/rooms/general?" in line]
    assert len(urls) >= len(authenticating) + 2  # uvicorn logs each socket's URL
    for line in lines:
        orjson.loads(line)  # still one JSON object
        for part in parts(token):
            assert part not in line
            assert encode_all(part) not in line


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("GET /x?token=abc&y=1", "GET /x?token=****&y=1"),
        ("GET /x?%74oken=abc&y=1", "GET /x?%74oken=****&y=1"),
        ("GET /x?TOKEN=abc", "GET /x?TOKEN=****"),
        ("GET /x?access_%74oken=abc", "GET /x?access_%74oken=****"),
        ("GET /x?api%5Fkey=abc", "GET /x?api%5Fkey=****"),
        ("GET /x?%2574oken=abc", "GET /x?%2574oken=****"),
        ("GET /x?q=50%25&page=2", "GET /x?q=50%25&page=2"),  # nothing secret stays as it was
        ("GET /a%20b?name=%D0%90", "GET /a%20b?name=%D0%90"),
        ('{"msg":"GET /x?token=abc\\" 200"}', '{"msg":"GET /x?token=****\\" 200"}'),
        (f"GET /x?a=1&b={JWT}", "GET /x?a=1&b=****"),
        (f"GET /x?b={JWT.replace('e', '%65')}", "GET /x?b=****"),
        (f"GET /x/{JWT.replace('.', '%252E')}/y", "GET /x/****/y"),
        ("Authorization: BeArEr abc.def", "Authorization: BeArEr ****"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked
