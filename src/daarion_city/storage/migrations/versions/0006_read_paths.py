"""An index of the default rooms, and a partial idempotency index (found by bench/unread.py).

- ``city_rooms (id) WHERE is_default``: the default rooms without a scan of the rooms;
- PostgreSQL: the idempotency key ``(room_id, author_user_id, client_msg_id)`` becomes a unique
  index ``WHERE client_msg_id IS NOT NULL``. As a full index its leading ``room_id`` made it a
  candidate for every lookup of a message by room and seq, and a generic plan cached while the
  table was small kept walking a room's messages through it (about 7,600 rows per call). A
  partial index serves only the statements that name a ``client_msg_id``; nothing else changes
  (NULLs never conflicted).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_rooms_default",
        "city_rooms",
        ["id"],
        postgresql_where=sa.text("is_default"),
        sqlite_where=sa.text("is_default"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("uq_room_messages_idempotency", "city_room_messages", type_="unique")
        op.create_index(
            "uq_room_messages_idempotency",
            "city_room_messages",
            ["room_id", "author_user_id", "client_msg_id"],
            unique=True,
            postgresql_where=sa.text("client_msg_id IS NOT NULL"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("uq_room_messages_idempotency", table_name="city_room_messages")
        op.create_unique_constraint(
            "uq_room_messages_idempotency",
            "city_room_messages",
            ["room_id", "author_user_id", "client_msg_id"],
        )
    op.drop_index("ix_rooms_default", table_name="city_rooms")
