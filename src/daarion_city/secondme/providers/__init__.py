"""Model providers behind one Protocol: ``local`` (embedded), ``openai`` (any compatible server)
and ``agents-core`` (the DAARION agents service)."""

from __future__ import annotations

from daarion_city.config import Settings
from daarion_city.secondme.providers.base import AgentProvider


def create_provider(settings: Settings) -> AgentProvider:
    """``agents-core`` when ``AGENTS_SERVICE_URL`` is set, else ``openai`` when
    ``SECONDME_LLM_BASE_URL`` is set, else the embedded ``local`` model."""
    s = settings
    if s.agents_service_url:
        from daarion_city.secondme.providers.agents_core import AgentsCoreProvider

        return AgentsCoreProvider(
            s.agents_service_url,
            connect_timeout=s.secondme_connect_timeout,
            read_timeout=s.secondme_first_token_timeout,
        )
    if s.secondme_llm_base_url:
        from daarion_city.secondme.providers.openai import OpenAIProvider

        return OpenAIProvider(
            s.secondme_llm_base_url,
            model=s.secondme_llm_model,
            api_key=s.secondme_llm_api_key.get_secret_value() if s.secondme_llm_api_key else "",
            max_tokens=s.secondme_max_tokens,
            temperature=s.secondme_temperature,
            context_tokens=s.secondme_llm_context_tokens,
            connect_timeout=s.secondme_connect_timeout,
            first_token_timeout=s.secondme_first_token_timeout,
            idle_timeout=s.secondme_idle_timeout,
        )
    from daarion_city.secondme.providers.local import LocalProvider

    return LocalProvider(
        model_path=s.secondme_local_model_path,
        n_ctx=s.secondme_local_context,
        threads=s.secondme_local_threads,
        max_tokens=s.secondme_max_tokens,
        temperature=s.secondme_temperature,
        repeat_penalty=s.secondme_local_repeat_penalty,
    )


def in_effect(settings: Settings) -> tuple[str, str | None, str | None]:
    """Which provider and model answer, without loading anything: ``(provider, model,
    problem)``, where ``problem`` says in one line what to run when the provider cannot work."""
    s = settings
    if s.agents_service_url:
        return "agents-core", None, None
    if s.secondme_llm_base_url:
        return "openai", s.secondme_llm_model or "default", None
    from daarion_city.secondme.providers.local import local_model_name, local_problem

    return (
        "local",
        local_model_name(s.secondme_local_model_path),
        local_problem(s.secondme_local_model_path),
    )


def describe(settings: Settings) -> str:
    """One line for the logs and ``check-config`` (no URLs: they may carry credentials)."""
    provider, model, problem = in_effect(settings)
    if model is None:
        model = "chosen by the agent" if provider == "agents-core" else "none"
    line = f"Second Me: provider {provider}, model {model}"
    return f"{line}; not answering: {problem}" if problem else line
