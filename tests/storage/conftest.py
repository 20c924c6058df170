"""A migrated :class:`Database` of each backend (the ``database_url`` fixture's SQLite file or
copy of the PostgreSQL template), and row builders shared by the storage tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate
from tests.conftest import make_settings


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(make_settings(database_url, tmp_path / "data").effective_database_url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def new(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def event_row(kind: str = "test_event", **values: Any) -> dict[str, Any]:
    """A feed event row as ``FeedService.rows`` makes them."""
    row: dict[str, Any] = {
        "id": new("evt"),
        "kind": kind,
        "room_id": None,
        "user_id": None,
        "agent_id": None,
        "payload": {"n": 1},
        "created_at": now(),
    }
    row.update(values)
    return row
