"""Second Me's tables (see ``tables.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from daarion_city.storage.tables import BigAutoInt, UTCDateTime, metadata

secondme_sessions = sa.Table(
    "secondme_sessions",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("user_id", sa.String(80), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("total_interactions", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("total_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_interaction", UTCDateTime(), nullable=True),
    sa.Column("busy_until", UTCDateTime(), nullable=True),
    sa.Column("tokens_day", sa.Date(), nullable=True),  # the UTC day tokens_today counts
    sa.Column("tokens_today", sa.BigInteger(), nullable=False, server_default="0"),
)

secondme_messages = sa.Table(
    "secondme_messages",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("session_id", sa.String(80), sa.ForeignKey("secondme_sessions.id"), nullable=False),
    sa.Column("user_id", sa.String(80), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="ok"),
    sa.Column("tokens_used", sa.Integer(), nullable=True),
    sa.Column("token_source", sa.String(16), nullable=True),
    sa.Column("latency_ms", sa.Integer(), nullable=True),
    sa.Column("error_code", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("context", sa.JSON(), nullable=True),  # an answer's: what its context held
    sa.Index("ix_secondme_messages_user_pos", "user_id", "pos"),
)

secondme_memory = sa.Table(
    "secondme_memory",
    metadata,
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("about", sa.Text(), nullable=False, server_default=""),
    sa.Column("summary", sa.Text(), nullable=False, server_default=""),
    sa.Column("summarized_pos", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
)
