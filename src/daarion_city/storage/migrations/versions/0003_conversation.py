"""Conversation (SPEC section 9): replies, mentions, edits, deletions and reactions on the one
timeline of a room.

Messages gain ``reply_to_seq``, ``mentions``, ``edited_at``, ``deleted``, ``deleted_by``,
``reactions`` (the current reactions, kept beside the message so a page is one statement) and
``ordinal`` (the message's number among the room's messages). Rooms gain ``last_message_seq``
and ``message_count``. Until now every timeline event was a message, so for the rows already
there the ordinal is the seq (left NULL: no rewrite of a room's whole history) and the room's
newest message and count are its ``last_seq``. The timeline's other events go in
``city_room_events``; who reacted with what in ``city_message_reactions``. A message's feed
event keeps its id only: its snippet is read from the message (and goes with its deletion).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("city_room_messages") as batch:
        batch.add_column(sa.Column("reply_to_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("mentions", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("edited_at", TS, nullable=True))
        batch.add_column(
            sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("deleted_by", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reactions", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("ordinal", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("city_rooms") as batch:
        batch.add_column(
            sa.Column("last_message_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("message_count", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute("UPDATE city_rooms SET last_message_seq = last_seq, message_count = last_seq")
    # A message's feed event keeps its id only (its snippet is read from the message, and
    # disappears with it): the text stored by v1 events goes.
    if op.get_bind().dialect.name == "postgresql":
        ids_only = "json_build_object('message_id', payload->>'message_id')"
    else:
        ids_only = "json_object('message_id', json_extract(payload, '$.message_id'))"
    op.execute(f"UPDATE city_feed_events SET payload = {ids_only} WHERE kind = 'room_message'")
    op.create_table(
        "city_room_events",
        sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_seq", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("emoji", sa.String(64), nullable=True),
        sa.Column("op", sa.String(8), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "city_message_reactions",
        sa.Column("pos", BIG_AUTO, primary_key=True, autoincrement=True),
        sa.Column("room_id", sa.String(80), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("emoji", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("room_id", "seq", "emoji", "user_id", name="uq_message_reactions"),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35 and later have it): a batch would recreate the tables,
    # which SQLite refuses for city_rooms while foreign keys are enforced.
    op.drop_table("city_message_reactions")
    op.drop_table("city_room_events")
    op.drop_column("city_rooms", "message_count")
    op.drop_column("city_rooms", "last_message_seq")
    for column in (
        "ordinal",
        "reactions",
        "deleted_by",
        "deleted",
        "edited_at",
        "mentions",
        "reply_to_seq",
    ):
        op.drop_column("city_room_messages", column)
