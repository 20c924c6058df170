"""The Matrix rooms bridge (SPEC section 6b).

- ``city_rooms.matrix_room_id`` and ``matrix_room_alias``: the Matrix room a city room is bridged
  to (null when it is not).
- ``matrix_events``: a city message (room, seq) and its Matrix event id, and which side it came
  from; ``matrix_reactions`` the same for one user's reaction with one emoji.
- ``matrix_cursors``: how far each bridged room's timeline and audit log have gone to Matrix
  (the outbound queue is the timeline itself, after the cursor).
- ``matrix_transactions``: the homeserver's transactions already committed.
- ``matrix_members``: Matrix users' display names.

Existing databases: no room is bridged until ``MATRIX_BRIDGE_ROOMS`` names it; a room bridged
later starts sending from its newest seq (its history is not replayed into Matrix).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("city_rooms") as batch:
        batch.add_column(sa.Column("matrix_room_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("matrix_room_alias", sa.String(255), nullable=True))
    op.create_table(
        "matrix_events",
        sa.Column("room_id", sa.String(80), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("origin", sa.String(8), nullable=False),
    )
    op.create_table(
        "matrix_reactions",
        sa.Column("room_id", sa.String(80), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("emoji", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("origin", sa.String(8), nullable=False),
    )
    op.create_table(
        "matrix_cursors",
        sa.Column("room_id", sa.String(80), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("audit_pos", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "matrix_transactions",
        sa.Column("txn_id", sa.String(255), primary_key=True),
        sa.Column("done_at", TS, nullable=False),
    )
    op.create_table(
        "matrix_members",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("displayname", sa.String(255), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "matrix_members",
        "matrix_transactions",
        "matrix_cursors",
        "matrix_reactions",
        "matrix_events",
    ):
        op.drop_table(table)
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch would copy city_rooms, which the
    # other tables' foreign keys refer to.
    op.drop_column("city_rooms", "matrix_room_alias")
    op.drop_column("city_rooms", "matrix_room_id")
