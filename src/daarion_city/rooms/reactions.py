"""Reaction changes (SPEC sections 9 and 12), committed together.

A reaction change is small and frequent (a room that likes a message sends one per person), so
the changes that wait in a room's commit queue one after another commit in one transaction
(``commit_reactions``, called by ``GroupCommit``): the room's row locked once, the messages and
their reaction rows read once, each change decided in arrival order against what the ones
before it did, then one reservation of seqs, the reaction rows inserted and deleted set-wise,
each touched message's ``reactions`` written once and the timeline events inserted in one
statement. Each change that changed something still takes its own seq and gets its own frame,
carrying the message's reactions as they were right after it, so a client sees the same
sequence as if the changes had committed one by one. A change refused (the message deleted,
too many emoji, no such message) is answered its error and does not hold up the others.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import emoji

from daarion_city.core.clock import utcnow
from daarion_city.core.errors import CityError, Conflict, NotFound, Unprocessable
from daarion_city.rooms.changes import ChangeResult
from daarion_city.rooms.frames import reaction_frame
from daarion_city.storage import reactions as reactions_store
from daarion_city.storage import timeline as timeline_store
from daarion_city.storage.database import Database

MAX_EMOJI_PER_MESSAGE = 20
UNLOCKED_TRIES = 3  # reads and conditional writes of a group before it takes the room's lock
SHORTCODE = re.compile(r":[a-z0-9_+-]{1,30}:")
FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]

_Entry = tuple[str, str]  # (emoji, user_id)


def normalize_emoji(raw: str) -> str:
    """One fully-qualified emoji of Unicode's recommended set, stored NFC with its variation
    selector (so "❤" and "❤️" are one), or a ``:shortcode:``; else 422 ``invalid_emoji``."""
    if SHORTCODE.fullmatch(raw):
        return raw
    text = unicodedata.normalize("NFC", raw)
    if 1 <= len(text) <= 32:
        for candidate in (text, text + "\ufe0f", text[:1] + "\ufe0f" + text[1:]):
            data = emoji.EMOJI_DATA.get(candidate)
            if data is not None and data.get("status") == FULLY_QUALIFIED:
                return candidate
    raise Unprocessable(
        "an emoji is one emoji of Unicode's recommended set or a :shortcode:",
        code="invalid_emoji",
    )


@dataclass(frozen=True, slots=True)
class Reaction:
    """One user's reaction added to (or removed from) the message at ``seq``."""

    user_id: str
    seq: int
    emoji: str
    add: bool


def listing(entries: Iterable[_Entry]) -> list[dict[str, Any]]:
    """A message's reactions as the wire lists them: per emoji (ordered by its first
    reaction), the count and the first users in the order they reacted."""
    grouped: dict[str, list[str]] = {}
    for emoji_, user_id in entries:
        grouped.setdefault(emoji_, []).append(user_id)
    return [
        {"emoji": e, "count": len(users), "users": users[: reactions_store.MAX_REACTION_USERS]}
        for e, users in grouped.items()
    ]


@dataclass(slots=True)
class _Message:
    """One message's reactions while a group of changes is decided: the rows as stored, in
    order (with their ``pos`` where known), then as each change leaves them."""

    entries: list[_Entry]
    stored: dict[_Entry, int | None]
    removed: set[_Entry] = field(default_factory=set)  # stored rows taken away (maybe re-added)

    def apply(self, change: Reaction) -> bool:
        """Apply the change; False when it changes nothing."""
        entry = (change.emoji, change.user_id)
        if change.add:
            if entry in self.entries:
                return False
            known = {e for e, _ in self.entries}
            if change.emoji not in known and len(known) >= MAX_EMOJI_PER_MESSAGE:
                raise Unprocessable(
                    f"at most {MAX_EMOJI_PER_MESSAGE} emoji per message", code="too_many_reactions"
                )
            self.entries.append(entry)
            return True
        if entry not in self.entries:
            return False
        self.entries.remove(entry)
        if entry in self.stored:
            self.removed.add(entry)
        return True

    def added(self) -> list[_Entry]:
        """Rows to insert, in order: those a change of the group added (a stored row that was
        removed and added again goes to the end, as it would one change at a time)."""
        return [e for e in self.entries if e not in self.stored or e in self.removed]

    def readded(self) -> bool:
        return any(e in self.removed for e in self.entries)


@dataclass(slots=True)
class _Decided:
    """A group decided: an outcome per change, and the changes that take a seq."""

    outcomes: list[ChangeResult | CityError]
    changed: list[tuple[int, Reaction, list[dict[str, Any]]]]  # (outcome index, change, after)
    touched: dict[int, _Message]

    def framed(self, room_id: str, first: int) -> list[ChangeResult | CityError]:
        """The outcomes, each change that took a seq (from ``first`` on) with its frame."""
        for i, (index, change, reactions) in enumerate(self.changed):
            op = "add" if change.add else "remove"
            frame = reaction_frame(
                room_id, first + i, change.seq, change.user_id, change.emoji, op, reactions
            )
            result = self.outcomes[index]
            assert isinstance(result, ChangeResult)
            self.outcomes[index] = ChangeResult(result.answer, (first + i, frame))
        return self.outcomes


def _decide(
    room_id: str, changes: list[Reaction], deleted: dict[int, bool], state: dict[int, _Message]
) -> _Decided:
    """Each change in order, against what the ones before it left (``deleted``: the messages
    there are, by seq)."""
    decided = _Decided([], [], {})
    for change in changes:
        message = state.get(change.seq)
        try:
            if message is None:
                detail = f"no message {change.seq} in this room"
                raise NotFound(detail, code="message_not_found")
            if deleted[change.seq]:
                raise Conflict("the message is deleted", code="message_deleted")
            changed = message.apply(change)
        except CityError as exc:
            decided.outcomes.append(exc)
            continue
        reactions = listing(message.entries)
        answer = {"room_id": room_id, "seq": change.seq, "reactions": reactions}
        decided.outcomes.append(ChangeResult(answer, None))
        if changed:
            decided.changed.append((len(decided.outcomes) - 1, change, reactions))
            decided.touched[change.seq] = message
    return decided


class _Locked(Exception):
    """The group needs the locked path (a reaction taken away and made again in it)."""


async def commit_reactions(
    db: Database, room_id: str, changes: list[Reaction]
) -> list[ChangeResult | CityError]:
    """Commit a room's consecutive reaction changes together (see the module); one outcome
    per change, in order. A failure of the store is raised for the caller to try the changes
    one by one."""
    if not db.is_sqlite:
        try:
            for _ in range(UNLOCKED_TRIES):
                outcomes = await _commit_unlocked(db, room_id, changes)
                if outcomes is not None:
                    return outcomes
        except _Locked:
            pass
    return await _commit_locked(db, room_id, changes)


async def _commit_unlocked(
    db: Database, room_id: str, changes: list[Reaction]
) -> list[ChangeResult | CityError] | None:
    """PostgreSQL: read, decide, then write on the condition that the room's timeline has not
    moved since the read (``storage/reactions.write_group``); None when it had."""
    async with db.autocommit() as conn:
        read = await reactions_store.read_group(conn, room_id, {c.seq for c in changes})
        if read is None:
            raise _Locked
        state = {
            seq: _Message([e for _, e in rows], {e: pos for pos, e in rows})
            for seq, rows in read.entries.items()
        }
        deleted = {seq: d for seq, (_, d) in read.messages.items()}
        decided = _decide(room_id, changes, deleted, state)
        if not decided.changed:
            return decided.outcomes
        if any(m.readded() for m in decided.touched.values()):
            raise _Locked
        first = await reactions_store.write_group(
            conn,
            room_id,
            last_seq=read.last_seq,
            gone=[
                pos
                for m in decided.touched.values()
                for e in m.removed
                if (pos := m.stored[e]) is not None
            ],
            added=[(seq, *e) for seq, m in decided.touched.items() for e in m.added()],
            listed={
                read.messages[seq][0]: listing(m.entries) for seq, m in decided.touched.items()
            },
            events=[
                (c.seq, c.user_id, c.emoji, "add" if c.add else "remove")
                for _, c, _ in decided.changed
            ],
            at=utcnow(),
        )
    return None if first is None else decided.framed(room_id, first)


async def _commit_locked(
    db: Database, room_id: str, changes: list[Reaction]
) -> list[ChangeResult | CityError]:
    """In one transaction that locks the room's row first (SQLite's writer lock, or
    PostgreSQL's row lock)."""
    async with db.begin() as conn:
        await timeline_store.lock_room(conn, room_id)
        wanted = {c.seq for c in changes}
        rows = await timeline_store.messages_at(conn, room_id, wanted)
        stored = await reactions_store.reaction_entries(conn, room_id, wanted)
        state = {
            seq: _Message(list(stored.get(seq, [])), dict.fromkeys(stored.get(seq, [])))
            for seq in rows
        }
        deleted = {seq: bool(row.deleted) for seq, row in rows.items()}
        decided = _decide(room_id, changes, deleted, state)
        if not decided.changed:
            return decided.outcomes
        first = await timeline_store.take_seqs(conn, room_id, len(decided.changed))
        touched = decided.touched
        await reactions_store.replace_reactions(
            conn,
            room_id,
            deleted=[(seq, *e) for seq, m in touched.items() for e in m.removed],
            added=[(seq, *e) for seq, m in touched.items() for e in m.added()],
            at=(at := utcnow()),
        )
        await reactions_store.set_reactions(
            conn, room_id, {seq: listing(m.entries) for seq, m in touched.items()}
        )
        await timeline_store.insert_events(
            conn,
            [
                {
                    "room_id": room_id,
                    "seq": first + i,
                    "kind": "reaction",
                    "target_seq": change.seq,
                    "user_id": change.user_id,
                    "emoji": change.emoji,
                    "op": "add" if change.add else "remove",
                    "created_at": at,
                }
                for i, (_, change, _) in enumerate(decided.changed)
            ],
        )
    return decided.framed(room_id, first)
