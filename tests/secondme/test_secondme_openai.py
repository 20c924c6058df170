"""Second Me through the openai provider against an OpenAI-compatible server of the test's own
over real HTTP: it streams answers, refuses what does not fit its window the way OpenAI, vLLM
and llama.cpp's server do (400 ``context_length_exceeded``), refuses bad input, or fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.cluster import free_port
from tests.conftest import make_settings
from tests.support import Api, User, run_server, serve_app

WINDOW = 2048


class ModelServer:
    def __init__(self) -> None:
        self.mode = "ok"
        self.window_chars = 3000  # what fits its window, counted in characters
        self.requests: list[list[dict[str, str]]] = []
        self.port = free_port()

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body["messages"])
        if self.mode == "500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if self.mode == "400":
            error = {"message": "Invalid 'messages[1].content'", "type": "invalid_request_error"}
            return JSONResponse({"error": {**error, "code": None}}, status_code=400)
        if sum(len(m["content"]) for m in body["messages"]) > self.window_chars:
            message = (
                f"This model's maximum context length is {WINDOW} tokens. However, you "
                "requested more tokens. Please reduce the length of the messages."
            )
            error = {"message": message, "type": "invalid_request_error", "param": "messages"}
            return JSONResponse(
                {"error": {**error, "code": "context_length_exceeded"}}, status_code=400
            )

        async def chunks() -> AsyncIterator[bytes]:
            for text in ("Hello", " there"):
                chunk = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                }
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    peer = ModelServer()
    app = Starlette(routes=[Route("/v1/chat/completions", peer.chat, methods=["POST"])])
    async with serve_app(app, port=peer.port, lifespan="off"):
        yield peer


def overrides(model_server: ModelServer) -> dict[str, Any]:
    return {
        "secondme_llm_base_url": model_server.url,
        "secondme_llm_model": "tiny",
        "secondme_max_tokens": 16,
        "secondme_breaker_failures": 3,
        "secondme_breaker_users": 2,
        "secondme_breaker_cooldown": 60,
        "secondme_context_tokens": 100_000,  # only the model's window limits the context
    }


@pytest.fixture
def settings_overrides(model_server: ModelServer) -> dict[str, Any]:
    return overrides(model_server)


async def invoke(user: User, prompt: str) -> Any:
    return await user.post("/secondme/invoke", {"prompt": prompt})


async def test_a_prompt_the_server_cannot_fit_is_prompt_too_long(
    api: Api, model_server: ModelServer
) -> None:
    alice = await api.guest("Alice")
    for n in range(5):
        r = await invoke(alice, "x" * 4000)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "prompt_too_long"
        # The window the server stated (2,048), less the answer's room and the system prompt.
        assert 1900 < r.json()["max_tokens"] < WINDOW
        assert len(model_server.requests) == n + 1
    # Alice's input, not the server, failed: nobody is switched off, Alice included.
    bob = await api.guest("Bob")
    assert (await invoke(bob, "hello")).status_code == 200
    assert (await invoke(alice, "hello")).status_code == 200


async def test_the_stream_says_prompt_too_long_with_the_limit(
    api: Api, model_server: ModelServer
) -> None:
    alice = await api.guest("Alice")
    async with api.http.stream(
        "POST", "/secondme/invoke/stream", json={"prompt": "x" * 4000}, headers=alice.headers
    ) as r:
        body = (await r.aread()).decode()
    event, data = body.strip().split("\n")
    assert event == "event: error"
    error = orjson.loads(data.removeprefix("data: "))
    assert (error["code"], error["status"]) == ("prompt_too_long", 422)
    assert 1900 < error["max_tokens"] < WINDOW


async def test_a_configured_window_is_checked_before_calling(
    database_url: str, tmp_path: Path, model_server: ModelServer
) -> None:
    settings = make_settings(
        database_url, tmp_path, **overrides(model_server), secondme_llm_context_tokens=512
    )
    async with run_server(settings) as server:
        api = Api(server)
        alice = await api.guest("Alice")
        r = await invoke(alice, "x" * 5000)
        assert r.status_code == 422
        assert r.json()["code"] == "prompt_too_long"
        assert 0 < r.json()["max_tokens"] < 512
        assert model_server.requests == []  # refused without calling the server
        assert (await invoke(alice, "hello")).status_code == 200
        await api.aclose()


async def test_older_turns_are_dropped_when_the_server_cannot_fit_them(
    api: Api, model_server: ModelServer
) -> None:
    alice = await api.guest("Alice")
    assert (await invoke(alice, "a" * 2000)).status_code == 200
    r = await invoke(alice, "b" * 2000)
    assert r.status_code == 200, r.text
    # Refused with the earlier turns, then asked again with the system prompt and prompt only.
    assert [m["role"] for m in model_server.requests[-2]] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert [m["role"] for m in model_server.requests[-1]] == ["system", "user"]
    assert model_server.requests[-1][-1]["content"] == "b" * 2000


async def test_a_prompt_the_server_refuses_never_opens_the_breaker(
    api: Api, model_server: ModelServer
) -> None:
    model_server.mode = "400"
    alice = await api.guest("Alice")
    for n in range(5):
        r = await invoke(alice, "refused")
        assert (r.status_code, r.json()["code"]) == (502, "agent_unavailable")
        assert "refused this prompt" in r.json()["detail"]
        assert len(model_server.requests) == n + 1
    model_server.mode = "ok"
    assert (await invoke(await api.guest("Bob"), "hello")).status_code == 200
    assert (await invoke(alice, "hello")).status_code == 200


async def test_a_failing_server_opens_the_breaker_only_when_several_users_fail(
    api: Api, model_server: ModelServer
) -> None:
    model_server.mode = "500"
    alice, bob, carol = [await api.guest(name) for name in ("Alice", "Bob", "Carol")]
    for _ in range(3):
        assert (await invoke(alice, "x")).status_code == 502
    r = await invoke(alice, "x")
    assert "circuit open" in r.json()["detail"]
    calls = len(model_server.requests)
    r = await invoke(bob, "x")  # reaches the server: Alice alone cannot switch it off for him
    assert r.status_code == 502
    assert "circuit open" not in r.json()["detail"]
    assert len(model_server.requests) > calls
    calls = len(model_server.requests)
    r = await invoke(carol, "x")  # two users failed in a row: the server itself is failing
    assert "circuit open" in r.json()["detail"]
    assert len(model_server.requests) == calls
