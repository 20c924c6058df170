"""The storage suite: the SQL of ``storage/`` called directly, on SQLite and PostgreSQL."""
