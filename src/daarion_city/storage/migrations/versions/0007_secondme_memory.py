"""Second Me v2 (SPEC section 5b): a memory per user, full-text search over their turns, and the
context each answer was given.

- ``secondme_memory``: the user's ``about`` (their own words), the agent's rolling ``summary`` of
  the turns that fell out of the context, and ``summarized_pos``: the newest turn (``pos``) the
  summary covers.
- ``secondme_sessions.tokens_day`` and ``tokens_today``: the tokens a user spent on the UTC day,
  kept with each answer (and summary refresh), so the daily budget is one row's read instead of
  a sum over the day's turns (which a heavy user's thousands of turns made slow:
  bench/secondme.py); filled for the day of the upgrade from the turns.
- ``secondme_messages.context``: on an assistant turn, what its context held (the ids of the
  recent and recalled turns, and whether the about and the summary went in).
- Full text over the turns, without stemming, so that Ukrainian and English both match word for
  word: SQLite keeps an FTS5 table (``unicode61 remove_diacritics 2``) in step with the turns by
  triggers, with the owner's id as a column of its own so that a search reads one user's postings;
  PostgreSQL stores ``to_tsvector('simple', content)`` in a generated column, ``content_tsv``, in
  a GIN index led by ``user_id`` (``btree_gin``), so that a search reads only the caller's
  entries; stored, the vector also makes a newest-first walk of a user's turns (for a word in
  many of them) and the ranking of matches cheap, and its statistics tell the planner which.

Existing databases: every turn is indexed; memories start empty.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE secondme_turns_fts USING fts5(user_id, content,"
    " content='secondme_messages', content_rowid='pos',"
    " tokenize='unicode61 remove_diacritics 2')",
    # ``user_id`` is indexed as the tokenizer splits it ("u_ab12" -> "u" "ab12"): a search asks
    # for that phrase in the user_id column and for the words in the content.
    "CREATE TRIGGER secondme_turns_fts_ai AFTER INSERT ON secondme_messages BEGIN"
    " INSERT INTO secondme_turns_fts(rowid, user_id, content)"
    " VALUES (new.pos, new.user_id, new.content); END",
    "CREATE TRIGGER secondme_turns_fts_ad AFTER DELETE ON secondme_messages BEGIN"
    " INSERT INTO secondme_turns_fts(secondme_turns_fts, rowid, user_id, content)"
    " VALUES ('delete', old.pos, old.user_id, old.content); END",
    "CREATE TRIGGER secondme_turns_fts_au AFTER UPDATE OF content, user_id"
    " ON secondme_messages BEGIN"
    " INSERT INTO secondme_turns_fts(secondme_turns_fts, rowid, user_id, content)"
    " VALUES ('delete', old.pos, old.user_id, old.content);"
    " INSERT INTO secondme_turns_fts(rowid, user_id, content)"
    " VALUES (new.pos, new.user_id, new.content); END",
    "INSERT INTO secondme_turns_fts(secondme_turns_fts) VALUES ('rebuild')",
    # How many turns hold each word: recall leaves out the words too common to tell turns apart.
    "CREATE VIRTUAL TABLE secondme_turns_vocab USING fts5vocab(secondme_turns_fts, 'row')",
]


def upgrade() -> None:
    op.create_table(
        "secondme_memory",
        sa.Column("user_id", sa.String(80), primary_key=True),
        sa.Column("about", sa.Text(), nullable=False, server_default=""),
        sa.Column("summary", sa.Text(), nullable=False, server_default=""),
        sa.Column("summarized_pos", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=True),
    )
    with op.batch_alter_table("secondme_messages") as batch:
        batch.add_column(sa.Column("context", sa.JSON(), nullable=True))
    with op.batch_alter_table("secondme_sessions") as batch:
        batch.add_column(sa.Column("tokens_day", sa.Date(), nullable=True))
        batch.add_column(
            sa.Column("tokens_today", sa.BigInteger(), nullable=False, server_default="0")
        )
    today = datetime.now(UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"  # naive UTC datetimes there (storage/tables.py)
    bind.execute(
        sa.text(
            "UPDATE secondme_sessions SET tokens_day = :day, tokens_today = (SELECT"
            " coalesce(sum(m.tokens_used), 0) FROM secondme_messages m"
            " WHERE m.user_id = secondme_sessions.user_id AND m.created_at >= :since)"
        ),
        {"day": today, "since": midnight.replace(tzinfo=None) if sqlite else midnight},
    )
    if sqlite:
        for statement in SQLITE_FTS:
            op.execute(statement)
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(
        "ALTER TABLE secondme_messages ADD COLUMN content_tsv tsvector"
        " GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_secondme_messages_fts ON secondme_messages"
        " USING gin (user_id, content_tsv)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS secondme_turns_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS secondme_turns_vocab")
        op.execute("DROP TABLE IF EXISTS secondme_turns_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_secondme_messages_fts")
        op.execute("ALTER TABLE secondme_messages DROP COLUMN IF EXISTS content_tsv")
    with op.batch_alter_table("secondme_messages") as batch:
        batch.drop_column("context")
    with op.batch_alter_table("secondme_sessions") as batch:
        batch.drop_column("tokens_today")
        batch.drop_column("tokens_day")
    op.drop_table("secondme_memory")
