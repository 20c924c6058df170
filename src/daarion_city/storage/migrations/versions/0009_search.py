"""Message search (SPEC section 11): an index of the messages' words, kept by the database.

Every path that changes a message (posts, edits, deletions, moderators' deletions, the Matrix
bridge's imports, erasure's tombstones) keeps the index right in its own transaction, with no
code of its own:

- SQLite: ``city_message_search``, an FTS5 table over ``city_room_messages`` (external content,
  ``rowid`` = the message's rowid; the columns ``body`` and ``room_id``, the room's id being a
  term so a room's search is one more term of the query) with the tokenizer
  ``unicode61 remove_diacritics 2``, kept by triggers on INSERT, UPDATE OF body, deleted, room_id
  and DELETE. Tombstones are not indexed. ``city_message_search_vocab`` (fts5vocab) lists its
  terms. (``VACUUM`` may renumber the rowids of a table without
  an INTEGER PRIMARY KEY: after one, ``INSERT INTO city_message_search(city_message_search)
  VALUES('rebuild')``.)
- PostgreSQL: ``city_room_messages.search_words``, a stored generated ``tsvector`` of
  ``to_tsvector('simple', city_search_text(body))``, with a GIN index of the messages that are
  not deleted, and ``ix_room_messages_recent`` on ``(created_at, id)``: the order of a search
  (newest first), walked backwards for a common word. ``city_search_text`` turns ASCII
  punctuation into spaces (so ``example.com/path`` is the words ``example``, ``com`` and
  ``path`` as unicode61 has them, not the parser's host and path) and folds the Latin letters
  with diacritics to their base letter as ``remove_diacritics 2`` does (a fixed table: the
  function is IMMUTABLE, needs no extension and does not depend on the database's locale). A
  stored column rather than an index expression: a query ordered by recency walks an index and
  checks each row's words, which is then a read of the column, not a parse of the body
  (``storage/search.py``).

Existing messages are indexed by the upgrade; the downgrade drops it all.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import unicodedata

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FTS = "city_message_search"


def latin_folds() -> tuple[str, str]:
    """The Latin letters with diacritics (Latin-1, Extended-A and -B, Extended Additional) and
    their base letters: what ``remove_diacritics 2`` folds (the Cyrillic й, ї, ё it keeps)."""
    source, target = [], []
    for cp in [*range(0xC0, 0x250), *range(0x1E00, 0x1F00)]:
        decomposed = unicodedata.normalize("NFD", chr(cp))
        base = decomposed[0]
        if len(decomposed) > 1 and base.isascii() and base.isalpha():
            source.append(chr(cp))
            target.append(base)
    return "".join(source), "".join(target)


def _sqlite_upgrade() -> None:
    op.execute(
        f"CREATE VIRTUAL TABLE {_FTS} USING fts5(body, room_id, content='city_room_messages', "
        "content_rowid='rowid', tokenize = 'unicode61 remove_diacritics 2')"
    )
    add_select = f"INSERT INTO {_FTS}(rowid, body, room_id) SELECT new.rowid, new.body, new.room_id"
    drop_select = (
        f"INSERT INTO {_FTS}({_FTS}, rowid, body, room_id) "
        "SELECT 'delete', old.rowid, old.body, old.room_id"
    )
    op.execute(
        "CREATE TRIGGER city_message_search_ai AFTER INSERT ON city_room_messages "
        f"BEGIN {add_select} WHERE NOT new.deleted; END"
    )
    op.execute(
        "CREATE TRIGGER city_message_search_ad AFTER DELETE ON city_room_messages "
        f"BEGIN {drop_select} WHERE NOT old.deleted; END"
    )
    # An edit, a deletion (a tombstone), a restored message: out with the old words, then in
    # with the new (in this order: a word of both stays); a reaction's UPDATE fires nothing.
    op.execute(
        "CREATE TRIGGER city_message_search_au AFTER UPDATE OF body, deleted, room_id "
        f"ON city_room_messages BEGIN {drop_select} WHERE NOT old.deleted; "
        f"{add_select} WHERE NOT new.deleted; END"
    )
    op.execute(
        f"INSERT INTO {_FTS}(rowid, body, room_id) "
        "SELECT rowid, body, room_id FROM city_room_messages WHERE NOT deleted"
    )
    # The index's terms: what a prefix of the last word stands for (storage/search.py).
    op.execute(f"CREATE VIRTUAL TABLE {_FTS}_vocab USING fts5vocab({_FTS}, row)")


def _pg_upgrade() -> None:
    source, target = latin_folds()
    punctuation = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum())
    # Each ASCII punctuation character (and the control characters) becomes a space.
    spaces = "".join(chr(c) for c in range(1, 0x20)) + punctuation
    source += spaces
    target += " " * len(spaces)
    op.execute(
        "CREATE FUNCTION city_search_text(body text) RETURNS text "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"AS $fn$ SELECT translate($1, {_literal(source)}, {_literal(target)}) $fn$"
    )
    op.execute(
        "ALTER TABLE city_room_messages ADD COLUMN search_words tsvector "
        "GENERATED ALWAYS AS (to_tsvector('simple', city_search_text(body))) STORED"
    )
    op.execute(
        "CREATE INDEX ix_room_messages_search ON city_room_messages USING gin (search_words) "
        "WHERE NOT deleted"
    )
    # Newest first (a search without a room): walked backwards for a common word.
    op.execute("CREATE INDEX ix_room_messages_recent ON city_room_messages (created_at, id)")
    op.execute("ANALYZE city_room_messages")


def _literal(text: str) -> str:
    """A PostgreSQL string constant (standard_conforming_strings: only quotes are doubled)."""
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_upgrade()
    else:
        _sqlite_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_room_messages_recent")
        op.execute("DROP INDEX ix_room_messages_search")
        op.execute("ALTER TABLE city_room_messages DROP COLUMN search_words")
        op.execute("DROP FUNCTION city_search_text(text)")
        return
    op.execute(f"DROP TABLE {_FTS}_vocab")
    for trigger in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER city_message_search_{trigger}")
    op.execute(f"DROP TABLE {_FTS}")
