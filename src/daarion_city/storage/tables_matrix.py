"""The Matrix rooms bridge's tables (SPEC 6b; migration 0008; see ``tables.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from daarion_city.storage.tables import UTCDateTime, metadata

# A city message and its Matrix event, whichever side it came from (``origin``: "city" when
# the bridge sent it, "matrix" when it imported it): replies, edits, redactions and reactions
# are mapped through it, and an event found here is never imported again.
matrix_events = sa.Table(
    "matrix_events",
    metadata,
    sa.Column("room_id", sa.String(80), primary_key=True),
    sa.Column("seq", sa.BigInteger(), primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("origin", sa.String(8), nullable=False),
)

# One user's reaction with one emoji to one message, and its m.reaction event.
matrix_reactions = sa.Table(
    "matrix_reactions",
    metadata,
    sa.Column("room_id", sa.String(80), primary_key=True),
    sa.Column("seq", sa.BigInteger(), primary_key=True),
    sa.Column("user_id", sa.String(80), primary_key=True),
    sa.Column("emoji", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("origin", sa.String(8), nullable=False),
)

# How far the bridge has sent a room's timeline (``seq``) and its audit log (``audit_pos``:
# bans and unbans of Matrix users) to Matrix: the persisted queue is the timeline after these.
matrix_cursors = sa.Table(
    "matrix_cursors",
    metadata,
    sa.Column("room_id", sa.String(80), primary_key=True),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("audit_pos", sa.BigInteger(), nullable=False),
)

# The homeserver's transactions the bridge has committed: a repeat imports nothing.
matrix_transactions = sa.Table(
    "matrix_transactions",
    metadata,
    sa.Column("txn_id", sa.String(255), primary_key=True),
    sa.Column("done_at", UTCDateTime(), nullable=False),
)

# Matrix users' display names, kept current from their m.room.member events.
matrix_members = sa.Table(
    "matrix_members",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("displayname", sa.String(255), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
