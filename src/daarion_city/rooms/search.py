"""Message search (SPEC 11, 12): the words of a query, the search, the snippets and the cursor.

- Words are runs of letters and digits (Unicode's, as FTS5's ``unicode61`` and the PostgreSQL
  index's ``city_search_text`` split a body); words under 2 characters are ignored, and none left
  is a 422. They are lowercased and their Latin diacritics folded (``remove_diacritics 2``
  folds é to e but keeps the Cyrillic й, ї, ё), so both databases look up the same terms.
- The index is the database's own (migration 0009, ``storage/search.py``), kept in step with
  every change of a message in its transaction: tombstones are never found, edited messages
  by their new text.
- A snippet is the message's text (a window of it around the first match for a long one),
  HTML-escaped, with each matching word wrapped in ``<mark>``..``</mark>`` after escaping.
- ``next`` is opaque: the last hit's key (a rowid on SQLite; an id, or a seq in one room, on
  PostgreSQL), tagged and base64url-encoded.
- Public, and so rate-limited per client address and bounded by a statement timeout.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from daarion_city.config import Settings
from daarion_city.core.errors import Unprocessable
from daarion_city.ratelimit import RateLimiter
from daarion_city.rooms.schemas import message_wire
from daarion_city.storage import search as store
from daarion_city.storage.database import Database

WORD = re.compile(r"[^\W_]+")  # letters and digits: \w without the underscore
MIN_WORD = 2
MAX_WORDS = 16
SNIPPET_CHARS = 240
SNIPPET_LEAD = 60  # characters shown before the first match of a long message
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _latin_folds() -> dict[int, str]:
    """Each Latin letter with diacritics and its base letter (migration 0009's table)."""
    table: dict[int, str] = {}
    for cp in [*range(0xC0, 0x250), *range(0x1E00, 0x1F00)]:
        decomposed = unicodedata.normalize("NFD", chr(cp))
        if len(decomposed) > 1 and decomposed[0].isascii() and decomposed[0].isalpha():
            table[cp] = decomposed[0]
    return table


FOLDS = _latin_folds()


def fold(word: str) -> str:
    return word.translate(FOLDS).lower()


def query_words(q: str) -> list[str]:
    """The words searched for: folded, in order, those of 2 characters or more (the first
    ``MAX_WORDS``); 422 ``query_too_short`` when none is left."""
    words = [fold(w) for w in WORD.findall(unicodedata.normalize("NFC", q))]
    words = [w for w in words if len(w) >= MIN_WORD][:MAX_WORDS]
    if not words:
        raise Unprocessable(
            f"search for at least one word of {MIN_WORD} letters or digits",
            code="query_too_short",
        )
    return words


def snippet(body: str, words: list[str]) -> str:
    """``body`` HTML-escaped, each word that matches (the last of ``words`` as a prefix) in
    ``<mark>``; a long body is cut to a window around its first match."""
    whole, prefix = set(words[:-1]), words[-1]
    spans = []
    for match in WORD.finditer(body):
        token = fold(match.group())
        if token in whole or token.startswith(prefix):
            spans.append(match.span())
    start, end = 0, len(body)
    if end > SNIPPET_CHARS:
        if spans:
            start = max(0, spans[0][0] - SNIPPET_LEAD)
        end = min(len(body), start + SNIPPET_CHARS)
    parts = ["…"] if start > 0 else []
    pos = start
    for s, e in spans:
        if s < start or e > end:
            continue
        parts += [html.escape(body[pos:s]), "<mark>", html.escape(body[s:e]), "</mark>"]
        pos = e
    parts.append(html.escape(body[pos:end]))
    if end < len(body):
        parts.append("…")
    return "".join(parts)


def encode_cursor(key: store.Key) -> str:
    if isinstance(key, int):
        raw = f"n:{key}"
    else:
        at, message_id = key
        raw = f"t:{(at - EPOCH) // MICROSECOND}:{message_id}"  # exact: no float
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> store.Key:
    """A cursor ``encode_cursor`` made, or 422 ``invalid_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind == "n" and _digits(value):
            return int(value)
        micros, _, message_id = value.partition(":")
        if kind == "t" and _digits(micros) and 0 < len(message_id) <= 80:
            return EPOCH + int(micros) * MICROSECOND, message_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError, OSError):
        pass
    raise Unprocessable("not a cursor this search gave", code="invalid_cursor")


def _digits(value: str) -> bool:
    """A non-negative 64-bit integer in ASCII digits."""
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) < 2**63


class MessageSearch:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        limiter: RateLimiter,
        resolve: Callable[[str], Awaitable[str]],
    ) -> None:
        self.db = db
        self.settings = settings
        self.limiter = limiter
        self._resolve = resolve

    async def admit(self, address: str) -> None:
        """One search of the client at ``address``, or 429 ``rate_limited``."""
        settings = self.settings
        await self.limiter.hit(
            f"search:{address}", rate=settings.city_search_rate, burst=settings.city_search_burst
        )

    async def search(
        self, q: str, *, room: str | None, limit: int, before: str | None
    ) -> dict[str, Any]:
        words = query_words(q)
        room_id = None if room is None else await self._resolve(room)
        key = None if before is None else decode_cursor(before)
        if key is not None and isinstance(key, int) != (self.db.is_sqlite or room_id is not None):
            # A cursor of a search in one room, used without it (or the other way round).
            raise Unprocessable("not a cursor of this search", code="invalid_cursor")
        rows = await store.search(
            self.db,
            words,
            room_id=room_id,
            before=key,
            limit=limit + 1,
            time_limit=self.settings.city_search_timeout,
        )
        hits = rows[:limit]

        def key_of(row: Any) -> store.Key:
            return store.key_of(self.db, row, in_room=room_id is not None)

        return {
            "results": [
                {"message": message_wire(r), "snippet": snippet(r.body, words)} for r in hits
            ],
            "next": None if len(rows) <= limit else encode_cursor(key_of(hits[-1])),
        }
