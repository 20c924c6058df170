"""Second Me through the agents-core provider, against a real HTTP server of the test's own that
checks the request body and answers, then fails in each way a peer can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.cluster import free_port
from tests.support import Api, User, eventually, serve_app


class AgentsCore:
    """A stand-in for the agents service, over real HTTP."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.port = free_port()

    async def invoke(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if self.mode == "400":
            return JSONResponse({"detail": "message_text is too long"}, status_code=400)
        if self.mode == "empty":
            return JSONResponse({"response_text": ""})
        if self.mode == "no-usage":
            return JSONResponse({"response_text": "без лічби"})
        n = len(self.requests)
        return JSONResponse(
            {"response_text": f"Відповідь {n}: {body['message_text']}", "tokens_used": 7}
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def agents() -> AsyncIterator[AgentsCore]:
    peer = AgentsCore()
    app = Starlette(routes=[Route("/agents/invoke", peer.invoke, methods=["POST"])])
    async with serve_app(app, port=peer.port, lifespan="off"):
        yield peer


@pytest.fixture
def settings_overrides(agents: AgentsCore) -> dict[str, Any]:
    return {
        "agents_service_url": agents.url,
        "secondme_first_token_timeout": 1.0,
        "secondme_breaker_failures": 3,
        "secondme_breaker_cooldown": 60,
        "secondme_breaker_users": 2,
        "secondme_daily_tokens": 30,
    }


async def invoke(user: User, prompt: str) -> Any:
    return await user.post("/secondme/invoke", {"prompt": prompt})


async def test_invoke_sends_the_spec_body_and_stores_both_turns(
    api: Api, agents: AgentsCore
) -> None:
    alice = await api.guest("Alice")
    r = await invoke(alice, "Привіт")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["response"] == "Відповідь 1: Привіт"
    assert answer["tokens_used"] == 7
    assert answer["latency_ms"] >= 0
    assert [(t["role"], t["content"]) for t in answer["history"]] == [
        ("user", "Привіт"),
        ("assistant", "Відповідь 1: Привіт"),
    ]
    assert agents.requests[0] == {
        "agent_id": "ag_secondme_global",
        "message_text": "Привіт",
        "user_id": alice.user_id,
        "channel_id": "secondme",
        # The system text (instructions, and the user's memory when there is one) as context.
        "context": {"history": [], "system": api.server.settings.secondme_system_prompt},
    }
    r = await invoke(alice, "Як справи?")
    # The context carries the earlier turns, never the new prompt twice.
    assert agents.requests[1]["context"]["history"] == [
        {"role": "user", "content": "Привіт"},
        {"role": "assistant", "content": "Відповідь 1: Привіт"},
    ]
    assert agents.requests[1]["message_text"] == "Як справи?"
    history = (await alice.get("/secondme/history")).json()
    assert [t["role"] for t in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["tokens_used"] == 7
    profile = (await alice.get("/secondme/profile")).json()
    assert profile["user_id"] == alice.user_id
    assert profile["agent_id"] == "ag_secondme_global"
    assert profile["total_interactions"] == 2
    assert profile["total_tokens"] == 14
    assert profile["last_interaction"].endswith("Z")


@pytest.mark.parametrize("mode", ["500", "empty", "timeout", "refused"])
async def test_failures_are_typed_and_store_no_invented_answer(
    api: Api, agents: AgentsCore, mode: str
) -> None:
    alice = await api.guest("Alice")
    if mode == "timeout":
        agents.delay = 3.0
    elif mode == "refused":
        api.server.resources.secondme.provider.url = f"http://127.0.0.1:{free_port()}/agents/invoke"  # type: ignore[attr-defined]
    else:
        agents.mode = mode
    r = await invoke(alice, "Ти тут?")
    expected = (504, "agent_timeout") if mode == "timeout" else (502, "agent_unavailable")
    assert (r.status_code, r.json()["code"]) == expected, r.text
    history = (await alice.get("/secondme/history")).json()
    assert [(t["role"], t["content"]) for t in history] == [("user", "Ти тут?")]
    profile = (await alice.get("/secondme/profile")).json()
    assert profile["total_interactions"] == 0
    # The failed turn is not sent as context next time.
    agents.mode, agents.delay = "ok", 0.0
    if mode == "refused":
        return
    r = await invoke(alice, "А тепер?")
    assert r.status_code == 200
    assert agents.requests[-1]["context"]["history"] == []


async def test_missing_usage_is_estimated(api: Api, agents: AgentsCore) -> None:
    agents.mode = "no-usage"
    alice = await api.guest("Alice")
    r = await invoke(alice, "порахуй")
    assert r.status_code == 200
    assert r.json()["tokens_used"] > 0


async def test_one_invocation_at_a_time_per_user(api: Api, agents: AgentsCore) -> None:
    agents.delay = 0.5
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    first = asyncio.ensure_future(invoke(alice, "one"))

    async def answering() -> bool:  # her first ask holds the lease while the agent answers it
        return len(agents.requests) == 1

    await eventually(answering, 5.0, "the first ask never reached the agent")
    second, bobs = await asyncio.gather(invoke(alice, "two"), invoke(bob, "mine"))
    assert (await first).status_code == 200
    assert second.status_code == 409
    assert second.json()["code"] == "busy"
    assert bobs.status_code == 200  # other users are not held up


async def test_circuit_breaker_opens_after_repeated_failures(api: Api, agents: AgentsCore) -> None:
    agents.mode = "500"
    alice = await api.guest("Alice")
    for _ in range(3):
        assert (await invoke(alice, "x")).status_code == 502
    calls = len(agents.requests)
    r = await invoke(alice, "x")
    assert r.status_code == 502
    assert "circuit open" in r.json()["detail"]
    assert len(agents.requests) == calls  # the agent was not called


async def test_one_users_failures_open_the_breaker_for_them_only(
    api: Api, agents: AgentsCore
) -> None:
    agents.mode = "500"
    alice, bob, carol = [await api.guest(name) for name in ("Alice", "Bob", "Carol")]
    for _ in range(3):
        assert (await invoke(alice, "x")).status_code == 502
    r = await invoke(alice, "x")
    assert "circuit open" in r.json()["detail"]
    # Bob is not refused because of Alice: his prompt reaches the agent.
    calls = len(agents.requests)
    r = await invoke(bob, "mine")
    assert (r.status_code, r.json()["code"]) == (502, "agent_unavailable")
    assert "circuit open" not in r.json()["detail"]
    assert len(agents.requests) == calls + 1
    # Failures from two users in a row (SECONDME_BREAKER_USERS): the agent itself is failing,
    # and now everyone is refused at once, without calling it.
    r = await invoke(carol, "and me?")
    assert r.status_code == 502
    assert "circuit open" in r.json()["detail"]
    assert len(agents.requests) == calls + 1


async def test_refusals_caused_by_the_prompt_never_open_the_breaker(
    api: Api, agents: AgentsCore
) -> None:
    agents.mode = "400"
    alice = await api.guest("Alice")
    for n in range(6):
        r = await invoke(alice, "a prompt the agent refuses")
        assert (r.status_code, r.json()["code"]) == (502, "agent_unavailable")
        assert "circuit open" not in r.json()["detail"]
        assert "refused this prompt" in r.json()["detail"]
        assert len(agents.requests) == n + 1  # each one reached the agent
    agents.mode = "ok"
    bob = await api.guest("Bob")
    assert (await invoke(bob, "mine")).status_code == 200
    assert (await invoke(alice, "and now?")).status_code == 200


async def test_daily_token_budget(api: Api, agents: AgentsCore) -> None:
    alice = await api.guest("Alice")
    codes = [(await invoke(alice, f"q{i}")).status_code for i in range(6)]
    # 7 tokens an answer, a budget of 30: a prompt is taken while less than 30 is spent.
    assert codes == [200, 200, 200, 200, 200, 429]
    r = await invoke(alice, "again")
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) > 0
    assert (await alice.get("/secondme/profile")).json()["total_tokens"] == 35
    bob = await api.guest("Bob")
    assert (await invoke(bob, "mine")).status_code == 200  # budgets are per user


async def test_stream_sends_deltas_then_done(api: Api, agents: AgentsCore) -> None:
    alice = await api.guest("Alice")
    async with api.http.stream(
        "POST", "/secondme/invoke/stream", json={"prompt": "стрім"}, headers=alice.headers
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = []
        name = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, orjson.loads(line[6:])))
    assert events[0] == ("delta", {"delta": "Відповідь 1: стрім"})
    assert events[-1][0] == "done"
    assert events[-1][1]["done"] is True
    assert events[-1][1]["tokens_used"] == 7
    agents.mode = "500"
    async with api.http.stream(
        "POST", "/secondme/invoke/stream", json={"prompt": "ще"}, headers=alice.headers
    ) as r:
        body = (await r.aread()).decode()
    assert "event: error" in body
    assert "agent_unavailable" in body


async def test_users_see_and_clear_only_their_own_history(api: Api, agents: AgentsCore) -> None:
    alice = await api.guest("Alice")
    bob = await api.guest("Bob")
    await invoke(alice, "alice's secret")
    await invoke(bob, "bob's note")
    alice_history = (await alice.get("/secondme/history")).json()
    bob_history = (await bob.get("/secondme/history")).json()
    assert all("bob" not in t["content"] for t in alice_history)
    assert all("alice" not in t["content"] for t in bob_history)
    assert (await alice.get("/secondme/profile")).json()["total_interactions"] == 1
    r = await bob.post("/secondme/history/clear")
    assert r.json() == {"status": "cleared", "deleted": 2}
    assert (await bob.get("/secondme/history")).json() == []
    assert len((await alice.get("/secondme/history")).json()) == 2
    # Bob's context no longer holds his cleared turns; Alice's is untouched.
    await invoke(bob, "fresh")
    assert agents.requests[-1]["context"]["history"] == []
    for method, path in (
        ("GET", "/secondme/history"),
        ("GET", "/secondme/profile"),
        ("POST", "/secondme/history/clear"),
        ("POST", "/secondme/invoke"),
        ("POST", "/secondme/invoke/stream"),
    ):
        r = await api.http.request(method, path, json={"prompt": "x"})
        assert r.status_code == 401, path


@pytest.mark.parametrize("body", [{"prompt": ""}, {"prompt": "  "}, {"prompt": "x" * 5001}, {}])
async def test_bad_prompts(api: Api, body: dict[str, str]) -> None:
    alice = await api.guest("Alice")
    r = await alice.post("/secondme/invoke", body)
    assert r.status_code == 422
    assert (await alice.get("/secondme/history")).json() == []
