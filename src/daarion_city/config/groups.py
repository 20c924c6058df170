"""Groups of settings that ``Settings`` (``config/__init__.py``) is made of: each a mixin of
fields only, read from the environment with the root's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class SecondMeSettings(BaseSettings):
    """Second Me (SPEC 5 and 5b): the providers, the context, the limits."""

    secondme_agent_id: str = "ag_secondme_global"
    agents_service_url: str = ""
    secondme_llm_base_url: str = ""
    secondme_llm_model: str = ""
    secondme_llm_api_key: SecretStr | None = None
    secondme_llm_context_tokens: int = Field(
        0, ge=0, description="The openai model's context window; 0: learnt from its refusals"
    )
    secondme_context_messages: int = Field(10, ge=0, le=100)
    secondme_recall_turns: int = Field(
        3, ge=0, le=20, description="Older turns matching the prompt added to its context"
    )
    secondme_context_tokens: int = Field(1024, ge=64, description="Token budget of the context")
    # In English: SmolLM2-135M, the embedded default, drifts into Cyrillic gibberish under a
    # Ukrainian-first prompt even for English questions (bench/secondme_quality.py).
    secondme_system_prompt: str = (
        "You are Second Me, the user's personal assistant in DAARION City. "
        "Answer briefly, in the language of the user's message."
    )
    secondme_max_tokens: int = Field(256, ge=1, le=8192)
    secondme_temperature: float = Field(0.2, ge=0.0, le=2.0)
    secondme_connect_timeout: float = Field(5.0, gt=0)
    secondme_first_token_timeout: float = Field(60.0, gt=0)
    secondme_idle_timeout: float = Field(30.0, gt=0)
    secondme_daily_tokens: int = Field(200_000, ge=1, description="Per user and UTC day")
    secondme_token_rate: float = Field(
        20.0, gt=0, description="Tokens per second per user (prompt + max_tokens per ask)"
    )
    secondme_token_burst: int = Field(8192, ge=1)
    secondme_local_model_path: str = ""
    secondme_local_context: int = Field(
        8192, ge=256, description="n_ctx of the local model (SmolLM2's full window)"
    )
    secondme_local_repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    secondme_local_threads: int = Field(2, ge=1)
    secondme_breaker_failures: int = Field(5, ge=1)
    secondme_breaker_cooldown: float = Field(30.0, gt=0)
    secondme_breaker_users: int = Field(
        3, ge=1, description="Distinct failing users before the provider-wide breaker opens"
    )


class MatrixSettings(BaseSettings):
    """The Matrix gateway and the rooms bridge (SPEC 6 and 6b)."""

    matrix_homeserver_url: str = ""
    matrix_server_name: str = ""
    matrix_as_token: SecretStr | None = None
    matrix_hs_token: SecretStr | None = None
    matrix_as_url: str = ""
    matrix_gateway_internal_token: SecretStr | None = None
    matrix_presence_min_interval: float = Field(
        10.0, gt=0, description="At most one presence write per user this often"
    )
    matrix_bridge_rooms: str = Field(
        "", description="City rooms bridged to Matrix rooms: slugs, comma-separated, or *"
    )
    matrix_bridge_backfill: int = Field(
        20, ge=0, description="Timeline events a newly bridged room sends from before it was"
    )
    matrix_bridge_poll: float = Field(
        1.0, gt=0, description="Seconds between looks for events other instances committed"
    )


class WebhookSettings(BaseSettings):
    """Webhooks (SPEC 11): on with both the URL and the secret; README lists the meanings."""

    city_webhook_url: str = ""
    city_webhook_secret: SecretStr | None = None
    city_webhook_retry_hours: float = Field(24.0, gt=0)
    city_webhook_timeout: float = Field(10.0, gt=0, le=300)
    city_webhook_max_backoff: float = Field(300.0, gt=0)
    city_webhook_batch: int = Field(100, ge=1, le=10_000)
    city_webhook_poll: float = Field(1.0, gt=0)
    city_webhook_order_wait: float = Field(2.0, ge=0)
    # Where the sender runs: "process" (a child process of each instance; PostgreSQL),
    # "inline" (the instance's event loop), "auto" (process on PostgreSQL, inline on SQLite).
    city_webhook_sender: Literal["auto", "process", "inline"] = "auto"
