"""Moderation and safety (SPEC section 10): slow mode, moderators, bans and mutes, reports,
the audit log and instance-wide suspensions.

A room's owner is its creator (``created_by``; seed rooms have none). Bans and mutes are rows of
``city_room_sanctions`` with an optional end; a report keeps a copy of the reported text. Every
moderation action writes one ``city_audit`` entry in its own transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("city_rooms") as batch:
        batch.add_column(sa.Column("slow_mode_s", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "city_room_moderators",
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("added_by", sa.String(80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "city_room_sanctions",
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("by_user", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
    )
    op.create_table(
        "city_audit",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column("room_id", sa.String(80), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(80), nullable=False),
        sa.Column("target_user_id", sa.String(80), nullable=True),
        sa.Column("target_seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False, server_default="{}"),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_audit_room_pos", "city_audit", ["room_id", "pos"])
    op.create_table(
        "city_reports",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reporter_id", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author_id", sa.String(80), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=True),
        sa.Column("resolved_by", sa.String(80), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_reports_room_status", "city_reports", ["room_id", "status", "pos"])
    op.create_index("ix_reports_reporter", "city_reports", ["reporter_id", "pos"])
    op.create_index(
        "uq_reports_open",
        "city_reports",
        ["reporter_id", "room_id", "seq"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "city_suspensions",
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("by_user", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("city_suspensions")
    op.drop_index("uq_reports_open", table_name="city_reports")
    op.drop_index("ix_reports_reporter", table_name="city_reports")
    op.drop_index("ix_reports_room_status", table_name="city_reports")
    op.drop_table("city_reports")
    op.drop_index("ix_audit_room_pos", table_name="city_audit")
    op.drop_table("city_audit")
    op.drop_table("city_room_sanctions")
    op.drop_table("city_room_moderators")
    op.drop_column("city_rooms", "slow_mode_s")
