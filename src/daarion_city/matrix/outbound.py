"""City to Matrix (SPEC 6b): each bridged room's timeline, in seq order, sent by puppets.

The persisted queue is the timeline itself: a cursor per room (``matrix_cursors``) says how far
it has gone, and is moved past each event once the homeserver has it (or has refused it for
good). So nothing is written on the city's hot path, a restart or an outage resumes where it
stopped, and the events go out in timeline order. Each is sent with a transaction id made of the
room and its seq (``city.<room>.<seq>``): a retry of one the homeserver already has (a crash
between its answer and the cursor's move) is not a second event.

- A message goes from its author's puppet (``@city_<id>``; an agent's from ``@city_<agent id>``),
  its mentions as pills (``formats.to_matrix``), a reply as ``m.in_reply_to``.
- An edit is an ``m.replace`` from the same puppet, a deletion a redaction: by the author's
  puppet when the author deleted it, by the bot when a moderator did or the author was erased.
  A reaction is an ``m.reaction`` annotation from the reactor's puppet; its removal redacts it.
- What came from Matrix (an author or actor that is a Matrix id) is not sent back; nor is a
  change of a message that never reached Matrix (one deleted before it went out is skipped).
- The room's bans and unbans of Matrix users (its audit log, after a cursor of its own) ban
  and unban them in the Matrix room.
- The homeserver unreachable, or answering 429 or 5xx: the same event is tried again with
  backoff (up to ``max_backoff``), city traffic never waits. Any other 4xx drops that one
  event (logged, counted in ``dropped``): it never blocks the queue.

New events (and bans) wake the sender on the instance that committed them (``wake``); it also
reads the rooms' newest seqs every ``poll`` seconds (one statement), for what other instances
committed, and looks at every room every 30 s (bans made on other instances).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from daarion_city.matrix.client import HomeserverClient, HomeserverUnavailable, MatrixError
from daarion_city.matrix.formats import to_matrix
from daarion_city.matrix.ids import puppet_id, puppet_localpart
from daarion_city.storage import matrix as store
from daarion_city.storage import timeline as timeline_store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

BATCH = 100  # timeline events read at a time
ROOMS_AT_ONCE = 8  # rooms sent to side by side (each in its own order)
SWEEP = 30.0  # seconds between looks at every room (bans made on other instances)


class _Retry(Exception):
    """The homeserver cannot take the event now: try it again later."""


def _is_matrix_user(user_id: str | None) -> bool:
    return bool(user_id) and str(user_id).startswith("@")


class Outbound:
    def __init__(
        self,
        db: Database,
        client: HomeserverClient,
        *,
        server_name: str,
        bot_id: str,
        poll: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.db = db
        self.client = client
        self.server_name = server_name
        self.bot_id = bot_id
        self.poll = poll
        self.max_backoff = max_backoff
        self.rooms: dict[str, str] = {}  # city room id -> Matrix room id
        self.sent = 0  # events the homeserver accepted
        self.dropped = 0  # events it refused for good
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()  # rooms with something to send, as far as known here
        self._at: dict[str, int] = {}  # room -> the newest seq it has sent or passed
        self._registered: set[str] = set()  # puppets registered this run
        self._ready: set[tuple[str, str]] = set()  # (puppet, Matrix room) joined this run
        self._names: dict[str, str] = {}  # city id -> its puppet's display name set this run

    def wake(self, room_id: str) -> None:
        """A room's timeline (or its bans) changed here (the rooms' listener): never waits."""
        if room_id in self.rooms:
            self._dirty.add(room_id)
            self._wake.set()

    async def run(self) -> None:
        failures = 0
        swept = -SWEEP
        while True:
            due = set(self._dirty)
            self._dirty.clear()
            try:
                if time.monotonic() - swept >= SWEEP:  # every room: bans made elsewhere too
                    due |= set(self.rooms)
                    swept = time.monotonic()
                elif self.rooms:
                    async with self.db.read() as conn:
                        newest = await store.last_seqs(conn, list(self.rooms))
                    due |= {r for r, seq in newest.items() if seq > self._at.get(r, -1)}
                await self._drain_rooms(due)
                failures = 0
                timeout = self.poll
            except (_Retry, HomeserverUnavailable) as exc:
                failures += 1
                timeout = min(self.max_backoff, 0.25 * 2 ** min(failures, 10))
                log.warning(
                    "the homeserver is not taking events (%s); again in %.1fs", exc, timeout
                )
            except Exception:  # the sender must outlive any one bad event or database hiccup
                failures += 1
                timeout = min(self.max_backoff, 0.25 * 2 ** min(failures, 10))
                log.exception("the Matrix sender failed; again in %.1fs", timeout)
            self._dirty |= due  # what was not done is tried again
            if self._dirty and not failures:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _drain_rooms(self, due: set[str]) -> None:
        """Each room's events in order; rooms side by side (``ROOMS_AT_ONCE`` at a time). The
        rooms done leave ``due``; the first failure is raised once the others have stopped."""
        limit = asyncio.Semaphore(ROOMS_AT_ONCE)

        async def drain(room_id: str) -> None:
            async with limit:
                while await self._drain(room_id):
                    pass
                due.discard(room_id)

        results = await asyncio.gather(*(drain(r) for r in sorted(due)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _drain(self, room_id: str) -> bool:
        """Send what the room has after its cursors; True if there may be more."""
        async with self.db.read() as conn:
            found = await store.cursor(conn, room_id)
            seq, audit_pos = found if found is not None else (0, 0)
            rows, messages = await timeline_store.timeline_after(conn, room_id, seq, BATCH)
            sanctions = await store.sanctions_after(conn, room_id, audit_pos)
        self._at[room_id] = max(self._at.get(room_id, 0), seq)
        matrix_room = self.rooms[room_id]
        for row in rows:
            mapped = await self._guarded(
                self._event(room_id, matrix_room, row, messages[int(row.target_seq)])
            )
            async with self.db.begin() as conn:  # a message's event id with the cursor's move
                if isinstance(mapped, str):
                    await store.map_event(conn, room_id, int(row.seq), mapped, "city")
                await store.advance(conn, room_id, seq=int(row.seq))
            self._at[room_id] = int(row.seq)
        for sanction in sanctions:
            ban = sanction.action == "ban"
            await self._guarded(
                self.client.ban(
                    matrix_room, sanction.target_user_id, sanction.reason, unban=not ban
                )
            )
            async with self.db.begin() as conn:
                await store.advance(conn, room_id, audit_pos=int(sanction.pos))
        return len(rows) == BATCH

    async def _guarded(self, call: Awaitable[Any]) -> Any:
        """The call's result; None when the homeserver refused it for good (dropped)."""
        try:
            result = await call
        except MatrixError as exc:
            if exc.matrix_status == 429 or exc.matrix_status >= 500:
                raise _Retry(exc.detail) from exc
            self.dropped += 1
            log.warning("the homeserver refused a bridged event for good: %s", exc.detail)
            return None
        self.sent += 1
        return result

    async def _event(self, room_id: str, matrix_room: str, row: Any, message: Any) -> str | None:
        """Send one timeline event; a message's Matrix event id, to map with the cursor."""
        kind, seq = row.kind, int(row.seq)
        author = message.author_user_id or message.author_agent_id
        txn = f"city.{room_id}.{seq}"
        if kind == "reaction":
            await self._reaction(room_id, matrix_room, row, txn)
            return None
        if _is_matrix_user(row.user_id if kind == "delete" else message.author_user_id):
            return None  # it came from Matrix (a Matrix user's message or edit, or their redaction)
        if author is None:
            return None  # a message of no one (none is stored so today)
        if kind == "message":
            if message.deleted:
                return None
            puppet = await self._puppet(author, message.username, matrix_room)
            content = await self._content(message)
            if message.reply_to_seq is not None:
                async with self.db.read() as conn:
                    replied = await store.event_of(conn, room_id, int(message.reply_to_seq))
                if replied is not None:
                    content["m.relates_to"] = {"m.in_reply_to": {"event_id": replied}}
            when = int(message.created_at.timestamp() * 1000)
            return await self.client.send(
                matrix_room, "m.room.message", txn, content, as_user=puppet, ts=when
            )
        async with self.db.read() as conn:
            target = await store.event_of(conn, room_id, int(row.target_seq))
        if target is None:
            return None  # it never reached Matrix
        if kind == "edit":
            if message.deleted:
                return None
            puppet = await self._puppet(author, message.username, matrix_room)
            new = await self._content(message)
            content = {
                **new,
                "body": "* " + new["body"],
                "m.new_content": new,
                "m.relates_to": {"rel_type": "m.replace", "event_id": target},
            }
            if "formatted_body" in new:
                content["formatted_body"] = "* " + new["formatted_body"]
            await self.client.send(matrix_room, "m.room.message", txn, content, as_user=puppet)
        elif kind == "delete":
            # An erasure's deletions are redacted by the bot (SPEC 12), as a moderator's.
            by_author = row.user_id == author and message.deleted_by != "erasure"
            as_user = (
                await self._puppet(author, message.username, matrix_room) if by_author else None
            )
            await self.client.redact(matrix_room, target, txn, as_user=as_user)
        return None

    async def _reaction(self, room_id: str, matrix_room: str, row: Any, txn: str) -> None:
        if _is_matrix_user(row.user_id):
            return
        key = {
            "room_id": room_id,
            "seq": int(row.target_seq),
            "user_id": row.user_id,
            "emoji": row.emoji,
        }
        async with self.db.read() as conn:
            target = await store.event_of(conn, room_id, int(row.target_seq))
            sent = await store.reaction_event(conn, **key)
        if target is None:
            return
        puppet = await self._puppet(
            row.user_id, self._names.get(row.user_id, row.user_id), matrix_room
        )
        if row.op == "add":
            if sent is not None:
                return
            content = {
                "m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": row.emoji}
            }
            event_id = await self.client.send(
                matrix_room, "m.reaction", txn, content, as_user=puppet
            )
            async with self.db.begin() as conn:
                await store.map_reaction(conn, "city", event_id=event_id, **key)
        elif sent is not None:
            await self.client.redact(matrix_room, sent, txn, as_user=puppet)
            async with self.db.begin() as conn:
                await store.unmap_reaction(conn, sent)

    async def _content(self, message: Any) -> dict[str, Any]:
        names: dict[str, str] = {}
        for who in message.mentions or []:
            if _is_matrix_user(who):
                async with self.db.read() as conn:
                    name = await store.member_name(conn, who)
            else:
                name = self._names.get(who)
            if name:
                names[who] = name
        return to_matrix(message.body, names, self.server_name)

    async def _puppet(self, city_id: str, name: str, matrix_room: str) -> str:
        """The city user's (or agent's) puppet: registered, named and in the room."""
        puppet = puppet_id(city_id, self.server_name)
        if (puppet, matrix_room) in self._ready and self._names.get(city_id) == name:
            return puppet
        if puppet not in self._registered:
            await self.client.register_puppet(puppet_localpart(city_id))
            self._registered.add(puppet)
        if self._names.get(city_id) != name:
            await self.client.set_displayname(puppet, name)
            self._names[city_id] = name
        if (puppet, matrix_room) not in self._ready:
            await self.client.join(matrix_room, as_user=puppet)
            self._ready.add((puppet, matrix_room))
        return puppet
