"""Read markers, notifications and the users the city knows (SPEC section 9 and 12).

``city_read_markers`` keeps each user's last read seq per room (only moving forward; a post
moves its author's). ``city_notifications`` keeps one notification per message and user it
notifies (a mention or a reply). ``city_users`` lists the users the service has seen
authenticated: only they are notified. A partial index on deleted messages keeps the unread
arithmetic (``storage/unread.py``) free of any scan of a room's history.

Existing databases: every author's marker starts at their newest message in each room, and
every author and member is a known user.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "city_read_markers",
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
        sa.Column("last_read_seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "city_notifications",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(80), nullable=False, unique=True),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("room_id", sa.String(80), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sender_id", sa.String(80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("user_id", "room_id", "seq", name="uq_notifications_message"),
    )
    op.create_index("ix_notifications_user_pos", "city_notifications", ["user_id", "pos"])
    op.create_table(
        "city_users",
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
    )
    op.create_index(
        "ix_room_messages_deleted",
        "city_room_messages",
        ["room_id", "seq"],
        postgresql_where=sa.text("deleted"),
        sqlite_where=sa.text("deleted"),
    )
    op.execute(
        "INSERT INTO city_read_markers (user_id, room_id, last_read_seq)"
        " SELECT author_user_id, room_id, max(seq) FROM city_room_messages"
        " WHERE author_user_id IS NOT NULL GROUP BY author_user_id, room_id"
    )
    op.execute(
        "INSERT INTO city_users (user_id, name, first_seen)"
        " SELECT user_id, max(name), min(at) FROM ("
        "  SELECT author_user_id AS user_id, username AS name, created_at AS at"
        "  FROM city_room_messages WHERE author_user_id IS NOT NULL"
        "  UNION ALL SELECT user_id, name, joined_at FROM city_room_members"
        " ) known GROUP BY user_id"
    )


def downgrade() -> None:
    op.drop_index("ix_room_messages_deleted", table_name="city_room_messages")
    op.drop_table("city_users")
    op.drop_index("ix_notifications_user_pos", table_name="city_notifications")
    op.drop_table("city_notifications")
    op.drop_table("city_read_markers")
