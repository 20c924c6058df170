"""The city schema of the original design (rooms, messages, members, feed, Second Me) and its seed.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    rooms = op.create_table(
        "city_rooms",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(80), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("member_count", sa.Integer(), nullable=False, server_default="0"),
    )
    messages = op.create_table(
        "city_room_messages",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("author_user_id", sa.String(80), nullable=True),
        sa.Column("author_agent_id", sa.String(80), nullable=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("room_id", "seq", name="uq_room_messages_room_seq"),
        sa.UniqueConstraint(
            "room_id", "author_user_id", "client_msg_id", name="uq_room_messages_idempotency"
        ),
        sa.CheckConstraint(
            "(author_user_id IS NULL) <> (author_agent_id IS NULL)",
            name="ck_room_messages_one_author",
        ),
    )
    op.create_table(
        "city_room_members",
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("joined_at", TS, nullable=False),
    )
    op.create_index("ix_room_members_user", "city_room_members", ["user_id"])
    feed = op.create_table(
        "city_feed_events",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("room_id", sa.String(80), nullable=True),
        sa.Column("user_id", sa.String(80), nullable=True),
        sa.Column("agent_id", sa.String(80), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_feed_events_kind_pos", "city_feed_events", ["kind", "pos"])
    op.create_table(
        "secondme_sessions",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("user_id", sa.String(80), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("total_interactions", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_interaction", TS, nullable=True),
    )
    op.create_table(
        "secondme_messages",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column(
            "session_id", sa.String(80), sa.ForeignKey("secondme_sessions.id"), nullable=False
        ),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="ok"),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        sa.Column("token_source", sa.String(16), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_secondme_messages_user_pos", "secondme_messages", ["user_id", "pos"])
    _seed(rooms, messages, feed)


def _seed(rooms: sa.Table, messages: sa.Table, feed: sa.Table) -> None:
    seed: dict[str, Any] = json.loads(
        resources.files("daarion_city.storage").joinpath("seed_data.json").read_text("utf-8")
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    last_seq: dict[str, int] = {}
    message_rows = []
    for msg in seed["messages"]:
        seq = last_seq.get(msg["room_id"], 0) + 1
        last_seq[msg["room_id"]] = seq
        message_rows.append(
            {
                "id": msg["id"],
                "room_id": msg["room_id"],
                "seq": seq,
                "author_user_id": None,
                "author_agent_id": msg["author_agent_id"],
                "username": msg["author_agent_id"],
                "body": msg["body"],
                "client_msg_id": None,
                "created_at": now,
            }
        )
    op.bulk_insert(
        rooms,
        [
            {
                "id": room["id"],
                "slug": room["slug"],
                "name": room["name"],
                "description": room["description"],
                "is_default": room["is_default"],
                "created_at": now,
                "created_by": None,
                "last_seq": last_seq.get(room["id"], 0),
                "member_count": 0,
            }
            for room in seed["rooms"]
        ],
    )
    op.bulk_insert(messages, message_rows)
    op.bulk_insert(
        feed,
        [
            {
                "id": event["id"],
                "kind": event["kind"],
                "room_id": event.get("room_id"),
                "user_id": event.get("user_id"),
                "agent_id": event.get("agent_id"),
                "payload": event["payload"],
                "created_at": now,
            }
            for event in seed["feed_events"]
        ],
    )


def downgrade() -> None:
    for table in (
        "secondme_messages",
        "secondme_sessions",
        "city_feed_events",
        "city_room_members",
        "city_room_messages",
        "city_rooms",
    ):
        op.drop_table(table)
