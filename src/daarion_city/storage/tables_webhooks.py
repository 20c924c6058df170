"""The webhooks' outbox (SPEC 11; migration 0010; see ``tables.py``)."""

from __future__ import annotations

import sqlalchemy as sa

from daarion_city.storage.tables import BigAutoInt, UTCDateTime, metadata

# A feed event still to be POSTed to CITY_WEBHOOK_URL: written with the event, in its
# transaction, while webhooks are on; deleted once delivered or given up. The body is the
# event as the feed shows it at each attempt (storage/webhooks.due).
webhook_outbox = sa.Table(
    "city_webhook_outbox",
    metadata,
    sa.Column("pos", BigAutoInt, primary_key=True, autoincrement=False),  # city_feed_events.pos
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
)
