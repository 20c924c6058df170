"""Persistence: SQLAlchemy Core tables, one query layer for SQLite and PostgreSQL, migrations."""
