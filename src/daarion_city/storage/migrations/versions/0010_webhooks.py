"""The webhooks' outbox (SPEC section 11).

- ``city_webhook_outbox``: one row per feed event still to be POSTed to ``CITY_WEBHOOK_URL``
  (its ``pos``, the attempts made, the first attempt's time and the next one's). Rows are
  written with their events only while webhooks are on.

Existing databases: the outbox starts empty; events written before are not sent.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "city_webhook_outbox",
        sa.Column(
            "pos",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_attempt_at", TS, nullable=True),
        sa.Column("next_attempt_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("city_webhook_outbox")
