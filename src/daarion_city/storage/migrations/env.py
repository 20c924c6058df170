"""Alembic environment: always run through :func:`daarion_city.storage.migrate.migrate`,
which hands over an open connection (sync facade of the async engine)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
