"""The schema as SQLAlchemy Core tables (the query layer's view; migrations own the DDL); the
Second Me's are in ``tables_secondme.py``, the Matrix bridge's in ``tables_matrix.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from daarion_city.core.clock import as_utc


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value)


# An auto-incrementing 64-bit key that is also SQLite's rowid alias.
BigAutoInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

rooms = sa.Table(
    "city_rooms",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(80), nullable=True),
    sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("member_count", sa.Integer(), nullable=False, server_default="0"),
    # The seq of the newest message (``last_seq`` counts every timeline event), and how many
    # messages the room has had (deleted ones included): the unread counts' arithmetic.
    sa.Column("last_message_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("message_count", sa.BigInteger(), nullable=False, server_default="0"),
    # A member posts at most once per this many seconds (0: off); moderators and up are exempt.
    sa.Column("slow_mode_s", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("matrix_room_id", sa.String(255), nullable=True),  # bridged (SPEC 6b), else None
    sa.Column("matrix_room_alias", sa.String(255), nullable=True),
)

room_messages = sa.Table(
    "city_room_messages",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("author_user_id", sa.String(80), nullable=True),
    sa.Column("author_agent_id", sa.String(80), nullable=True),
    sa.Column("username", sa.String(100), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("client_msg_id", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("reply_to_seq", sa.BigInteger(), nullable=True),
    sa.Column("mentions", sa.JSON(), nullable=False, server_default="[]"),
    sa.Column("edited_at", UTCDateTime(), nullable=True),
    sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("deleted_by", sa.String(16), nullable=True),
    sa.Column("reactions", sa.JSON(), nullable=False, server_default="[]"),
    # The message's number among the room's messages (1, 2, ...); None for the messages of
    # before the timeline had other events, whose number is their seq (migration 0003).
    sa.Column("ordinal", sa.BigInteger(), nullable=True),
    sa.UniqueConstraint("room_id", "seq", name="uq_room_messages_room_seq"),
    # Deleted messages, few in any room: the unread counts subtract those past a marker.
    sa.Index(
        "ix_room_messages_deleted",
        "room_id",
        "seq",
        postgresql_where=sa.text("deleted"),
        sqlite_where=sa.text("deleted"),
    ),
    # On PostgreSQL a unique index WHERE client_msg_id IS NOT NULL (migration 0006).
    sa.UniqueConstraint(
        "room_id", "author_user_id", "client_msg_id", name="uq_room_messages_idempotency"
    ),
)

room_events = sa.Table(
    "city_room_events",
    metadata,
    # The timeline's other events: an edit, a deletion or a reaction change of the message at
    # ``target_seq``, at the room's ``seq`` (messages take theirs in city_room_messages).
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger(), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target_seq", sa.BigInteger(), nullable=False),
    sa.Column("user_id", sa.String(80), nullable=False),
    sa.Column("emoji", sa.String(64), nullable=True),
    sa.Column("op", sa.String(8), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

message_reactions = sa.Table(
    "city_message_reactions",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("room_id", sa.String(80), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("emoji", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("room_id", "seq", "emoji", "user_id", name="uq_message_reactions"),
)

room_members = sa.Table(
    "city_room_members",
    metadata,
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("joined_at", UTCDateTime(), nullable=False),
)

read_markers = sa.Table(
    "city_read_markers",
    metadata,
    # A user's last read seq in a room: only moves forward; a post moves its author's.
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
    sa.Column("last_read_seq", sa.BigInteger(), nullable=False),
)

notifications = sa.Table(
    "city_notifications",
    metadata,
    # One per message and user it notifies (a mention of them, or a reply to their message).
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("user_id", sa.String(80), nullable=False),
    sa.Column("room_id", sa.String(80), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("sender_id", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("user_id", "room_id", "seq", name="uq_notifications_message"),
    sa.Index("ix_notifications_user_pos", "user_id", "pos"),
)

known_users = sa.Table(
    "city_users",
    metadata,
    # The users the service has seen authenticated (only they are notified).
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
)

room_moderators = sa.Table(
    "city_room_moderators",
    metadata,
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("added_by", sa.String(80), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

room_sanctions = sa.Table(
    "city_room_sanctions",
    metadata,
    # A ban or a mute of a user in a room, until ``expires_at`` (None: until lifted).
    sa.Column("room_id", sa.String(80), sa.ForeignKey("city_rooms.id"), primary_key=True),
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("by_user", sa.String(80), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)

audit = sa.Table(
    "city_audit",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("room_id", sa.String(80), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(80), nullable=False),
    sa.Column("target_user_id", sa.String(80), nullable=True),
    sa.Column("target_seq", sa.BigInteger(), nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("details", sa.JSON(), nullable=False, server_default="{}"),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_audit_room_pos", "room_id", "pos"),
)

reports = sa.Table(
    "city_reports",
    metadata,
    # A report of a message, with a copy of its text at the time of the report.
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
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
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_reports_room_status", "room_id", "status", "pos"),
    sa.Index("ix_reports_reporter", "reporter_id", "pos"),
    sa.Index(
        "uq_reports_open",
        "reporter_id",
        "room_id",
        "seq",
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    ),
)

suspensions = sa.Table(
    "city_suspensions",
    metadata,
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("by_user", sa.String(80), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)

# Users erased by DELETE /city/me (SPEC 11): their tokens are refused from then on.
retired_users = sa.Table(
    "city_retired_users",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(80), nullable=False, unique=True),
    sa.Column("retired_at", UTCDateTime(), nullable=False),
    sa.Column("erased_at", UTCDateTime(), nullable=True),  # None: the erasure is not finished
)

feed_events = sa.Table(
    "city_feed_events",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("room_id", sa.String(80), nullable=True),
    sa.Column("user_id", sa.String(80), nullable=True),
    sa.Column("agent_id", sa.String(80), nullable=True),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_feed_events_kind_pos", "kind", "pos"),
)
