"""Second Me at run time: a lease so one invocation runs at a time per user (across instances),
failed turns kept apart, and an index for the daily token budget.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secondme_sessions") as batch:
        batch.add_column(sa.Column("busy_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("secondme_messages") as batch:
        batch.add_column(sa.Column("error_code", sa.String(40), nullable=True))
    op.create_index(
        "ix_secondme_messages_user_created", "secondme_messages", ["user_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_secondme_messages_user_created", "secondme_messages")
    with op.batch_alter_table("secondme_messages") as batch:
        batch.drop_column("error_code")
    with op.batch_alter_table("secondme_sessions") as batch:
        batch.drop_column("busy_until")
