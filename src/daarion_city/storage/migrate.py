"""Versioned migrations (Alembic), applied by ``daarion-city migrate`` and at start-up."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from daarion_city.storage.database import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(db: Database) -> str:
    """Bring the schema to the newest revision; returns that revision."""
    async with db.begin() as conn:
        if db.dialect == "postgresql":
            # Instances starting together take turns; the second finds the schema current.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7001025)"))
        await conn.run_sync(_upgrade)
        current = await conn.run_sync(_current)
    return current or ""


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return script.get_current_head() or ""
