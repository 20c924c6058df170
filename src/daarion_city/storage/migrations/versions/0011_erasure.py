"""Your data (SPEC section 11): the user ids retired by ``DELETE /city/me``.

- ``city_retired_users``: one row per erased user, written before anything of theirs is
  removed; every token with that ``sub`` is refused from then on. ``erased_at`` is set once the
  erasure finished, so one cut short (a crash) is finished at the next start.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "city_retired_users",
        sa.Column(
            "pos",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("user_id", sa.String(80), nullable=False, unique=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("city_retired_users")
