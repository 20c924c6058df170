"""Settings: one root object, read from the environment once by the CLI and passed down.

Names follow the SPEC (``DATABASE_URL``, ``REDIS_URL``, ``CITY_JWT_SECRET``, ``PRESENCE_TTL`` ...).
Nothing here is built at import time; ``Settings()`` is called by the CLI or by a test.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from daarion_city.config.groups import MatrixSettings, SecondMeSettings, WebhookSettings
from daarion_city.core.logs import MASK, mask_url
from daarion_city.core.provided import Key
from daarion_city.core.validation import JsonLimits

# "city" is rooms, presence, the feed and the web client (port 7001); "secondme" (7003) and
# "matrix" (7025) can run in their own processes or beside it.
ALL_SERVICES = ("city", "secondme", "matrix")


class Settings(SecondMeSettings, MatrixSettings, WebhookSettings, BaseSettings):
    """The effective configuration of one process (Second Me's, the Matrix gateway's and the
    webhooks' settings are declared in ``groups.py``)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- process -----------------------------------------------------------------------------
    city_host: str = "127.0.0.1"
    city_port: int = 7001
    city_data_dir: Path = Path("./data")
    city_instances: int = Field(1, ge=1, description="How many instances share the database")
    city_instance_id: str = ""
    log_level: str = "info"
    city_opentelemetry: bool = Field(
        False,
        description="Let FastAPI trace requests to a configured OpenTelemetry provider "
        "(off: the service's own metrics and logs cover it, and the check alone cost about 8% "
        "of the CPU of a post)",
    )
    city_shutdown_timeout: float = Field(
        10.0, gt=0, description="Seconds requests in flight get to finish on SIGTERM"
    )
    city_gc_interval: float = Field(
        60.0,
        ge=0,
        description="Seconds between the full garbage collections the server runs itself "
        "(less often when one takes over 1% of that time); Python's own ran whenever the heap "
        "grew by a quarter and paused the loop up to 0.8 s with 10,000 sockets. 0: Python's",
    )
    # The request head (request line and headers): 431 past the size or count, 408 past the time.
    city_max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Bytes of a request's line and headers (Node's default)"
    )
    city_max_headers: int = Field(100, ge=8, description="Headers of one request")
    city_header_timeout: float = Field(
        10.0, gt=0, description="Seconds a request's line and headers have to arrive"
    )

    # --- storage -----------------------------------------------------------------------------
    database_url: str = ""
    database_pool_size: int = Field(10, ge=1, le=200)
    database_timeout: float = Field(5.0, gt=0, description="Seconds for one database call")
    redis_url: str = ""
    city_redis_prefix: str = Field("", description="Prefix of every Redis key and channel")
    redis_pool_size: int = Field(64, ge=1, le=1000)

    # --- identity ----------------------------------------------------------------------------
    city_jwt_secret: SecretStr | None = None
    city_allow_guests: bool = True
    city_admins: str = Field(
        "", description="User ids with every power in every room, comma-separated (SPEC 10)"
    )
    city_guest_token_ttl: int = Field(7 * 24 * 3600, ge=60)
    city_allowed_origins: str = Field(
        "",
        description="Comma-separated origins allowed for browsers (CORS and WebSocket Origin); "
        "empty: same-origin only; '*': any",
    )
    city_ws_auth_timeout: float = Field(
        10.0, gt=0, description="Seconds a socket without ?token= has to send its auth frame"
    )
    city_ws_connect_rate: float = Field(
        20.0, gt=0, description="WebSocket connections per second per client address"
    )
    city_ws_connect_burst: int = Field(200, ge=1)
    city_guest_rate: float = Field(0.5, gt=0, description="Guest sign-ups per second per address")
    city_guest_burst: int = Field(20, ge=1)
    city_export_rate: float = Field(
        1.0, gt=0, description="Exports and erasures (/city/me) per minute per user (burst 3)"
    )

    # --- rooms -------------------------------------------------------------------------------
    city_default_rooms: str = "general,welcome,builders"
    city_resume_limit: int = Field(1000, ge=1)
    city_message_rate: float = Field(5.0, gt=0, description="Messages per second per user")
    city_message_burst: int = Field(30, ge=1)
    city_room_create_rate: float = Field(0.2, gt=0)
    city_room_create_burst: int = Field(5, ge=1)
    city_max_body_bytes: int = Field(64 * 1024, ge=1024)
    city_ws_max_frame_bytes: int = Field(64 * 1024, ge=1024)
    city_ws_send_queue: int = Field(
        1000,
        ge=1,
        description="Live frames queued per socket before 4408 (the opening snapshot not counted)",
    )
    city_ws_close_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a socket the server closes (4408, 1001) gets to take its close frame "
        "before its connection is aborted",
    )
    city_ws_max_per_user: int = Field(20, ge=1)
    city_large_room: int = Field(
        200,
        ge=1,
        description="Above this many users online in a room its sockets get a coalesced "
        "room.online count instead of per-user room.join/room.leave (SPEC 2b); below 3/4 of "
        "it they resume",
    )
    city_large_room_list: int = Field(
        200, ge=1, le=5000, description="Online members listed by room.state and a room's detail"
    )
    city_room_online_interval: float = Field(
        1.0, gt=0, description="Seconds between room.online counts of a large room (at most)"
    )
    city_typing_timeout: float = Field(
        10.0, gt=0, description="Seconds a typing notice lasts after the last true"
    )
    city_typing_interval: float = Field(
        3.0,
        gt=0,
        description="A user's typing state in a room is announced at most this often; a change "
        "asked for sooner is announced at the end of the interval (the latest state wins)",
    )
    city_search_rate: float = Field(5.0, gt=0, description="Searches per second per address")
    city_search_burst: int = Field(20, ge=1)
    city_search_timeout: float = Field(2.0, gt=0, description="Seconds a search may run (503)")
    city_max_mentions: int = Field(
        20, ge=1, le=1000, description="Distinct users one message may mention (422 above)"
    )
    city_notify_rate: int = Field(
        30,
        ge=1,
        description="Notifications per minute from one sender to one recipient (the rest are "
        "dropped silently)",
    )
    city_unread_push_interval: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Seconds between two unread.update pushes of one room while new messages "
        "arrive (the last push after a burst carries the final counts)",
    )
    city_read_snapshots: int = Field(
        4096,
        ge=0,
        description="Encoded answers of public reads kept in memory (room list, room details, "
        "message pages, feed pages), the least recently read dropped first; 0 turns them off",
    )
    city_read_snapshot_max_age: float = Field(
        10.0,
        gt=0,
        description="Seconds a read snapshot is served at most (changes drop it at once; this "
        "bounds what a lost bus message can leave stale)",
    )
    city_max_json_depth: int = Field(16, ge=2, description="Nesting of a JSON body or frame")
    city_max_json_items: int = Field(1000, ge=1, description="Items of one JSON array or object")

    # --- presence ----------------------------------------------------------------------------
    presence_ttl: float = Field(40.0, gt=0)
    presence_sweep_interval: float = Field(5.0, gt=0)
    presence_away_after: float = Field(300.0, gt=0)
    presence_heartbeat_interval: float = Field(15.0, gt=0)
    presence_write_rate: float = Field(
        1.0,
        gt=0,
        description="Per user: presence writes per second over HTTP (shared by the instances), "
        "socket heartbeats per second on one instance (all the user's sockets together), and "
        "room.typing frames per second on one instance; each its own bucket",
    )
    presence_write_burst: int = Field(20, ge=1)
    presence_max_sockets_per_user: int = Field(
        10,
        ge=1,
        description="Presence sockets per user on one instance (one more is closed with 4429); "
        "times the heartbeat rate, it should stay under PRESENCE_WRITE_RATE",
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, value: str) -> str:
        return value.strip()

    # --- derived -----------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL: SQLite under the data directory unless DATABASE_URL is set."""
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{(self.city_data_dir / 'city.sqlite3').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def webhooks_on(self) -> bool:
        return bool(self.city_webhook_url and self.city_webhook_secret)  # an empty one is False

    @property
    def webhook_process(self) -> bool:
        """Whether the webhook sender runs in a child process (CITY_WEBHOOK_SENDER)."""
        mode = self.city_webhook_sender
        return mode == "process" or (mode == "auto" and not self.is_sqlite)

    @property
    def default_room_slugs(self) -> list[str]:
        return [s.strip() for s in self.city_default_rooms.split(",") if s.strip()]

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.city_admins.split(",") if a.strip())

    @property
    def allowed_origins(self) -> list[str]:
        return [o.strip() for o in self.city_allowed_origins.split(",") if o.strip()]

    @cached_property
    def json_limits(self) -> JsonLimits:
        return JsonLimits(depth=self.city_max_json_depth, items=self.city_max_json_items)

    def masked(self) -> dict[str, Any]:
        """The configuration as a dict, secrets masked: every ``SecretStr``, and in every
        URL-valued setting the user part, the password and the query values (``mask_url``)."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = MASK if value.get_secret_value() else ""
            elif isinstance(value, str) and (name.endswith("_url") or "://" in value):
                out[name] = mask_url(value)
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        out["effective_database_url"] = mask_url(self.effective_database_url)
        return out


SETTINGS: Key[Settings] = Key("settings")
