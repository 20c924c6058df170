"""Read markers, unread and mention counts, and notifications (SPEC section 9 and 12).

A user's marker in a room only moves forward: ``POST .../read`` moves it, and so does each post
of theirs (in the post's own commit, ``storage/messages.py``). The counts are exact and cost no
scan of a room's history (``storage/unread.py``). A mention of a user, or a reply to their
message, by someone else notifies them once per message, if the service knows them (it has seen
them authenticated, ``identity/known.py``) and the sender has not notified them more than
``CITY_NOTIFY_RATE`` times in the last minute (the rest are dropped silently).

Personal events go to the user's presence sockets on every instance (``send``: the presence
domain's personal channel): ``notification`` at once, and ``unread.update`` at once when their
marker moves or a notification changes their mention count; new messages push the counts of
the rooms' readers in batches (``rooms/unreadpush.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from daarion_city.config import Settings
from daarion_city.core.clock import iso, utcnow
from daarion_city.core.errors import NotFound, RateLimited, Unprocessable
from daarion_city.core.ids import new_id
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.known import KnownUsers
from daarion_city.identity.principal import Principal
from daarion_city.ratelimit import RateLimiter
from daarion_city.realtime.protocol import encode
from daarion_city.rooms.schemas import message_wire
from daarion_city.storage import messages as message_store
from daarion_city.storage import moderation as moderation_store
from daarion_city.storage import rooms as room_store
from daarion_city.storage import unread as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)


class Personal(Protocol):
    """The users' presence sockets (the presence domain's ``PersonalEvents``)."""

    def users(self) -> Collection[str]:
        """The users with a presence socket on this instance."""
        ...

    def deliver(self, user_id: str, frame: str) -> None:
        """A frame to this instance's sockets of the user."""
        ...

    async def send(self, frames: list[tuple[str, str]]) -> None:
        """``(user_id, frame)`` pairs to the users' sockets on every instance."""
        ...


def counts_wire(counts: store.Counts) -> dict[str, Any]:
    _, room_id, marker, unread, mentions = counts
    return {
        "room_id": room_id,
        "last_read_seq": marker,
        "unread_count": unread,
        "mention_count": mentions,
    }


def update_frame(counts: store.Counts) -> str:
    return encode({"event": "unread.update", **counts_wire(counts)})


def notification_wire(row: Any) -> dict[str, Any]:
    return {
        "id": row.n_id,
        "kind": row.n_kind,
        "room_id": row.room_id,
        "message": message_wire(row),
        "created_at": iso(row.n_created_at),
        "read": bool(row.n_read),
    }


class Unread:
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        limiter: RateLimiter,
        resolve: Callable[[str], Awaitable[str]],
        personal: Personal,
        known: KnownUsers,
        tasks: TaskSet,
    ) -> None:
        self.db = db
        self.settings = settings
        self.limiter = limiter
        self._resolve = resolve
        self._personal = personal
        self._tasks = tasks
        self._known = known

    async def mark_read(self, user: Principal, ref: str, seq: int) -> dict[str, Any]:
        """Move the caller's marker in a room forward to ``seq`` (an older seq leaves it); 422
        ``invalid_seq`` past the room's newest. Their presence sockets get the counts."""
        room_id = await self._resolve(ref)
        async with self.db.begin() as conn:
            newest = await message_store.last_seq(conn, room_id)
            if seq > newest:
                raise Unprocessable(
                    f"seq {seq} is past the room's newest ({newest})", code="invalid_seq"
                )
            await store.advance_markers(conn, [(user.user_id, room_id, seq)])
            (counts,) = await store.counts(conn, [user.user_id], room_id, listed_only=False)
        await self._quietly([(user.user_id, update_frame(counts))])
        return counts_wire(counts)

    async def of_user(self, user_id: str) -> list[dict[str, Any]]:
        """``GET /city/me/unread``: the counts of every room the user lists (joined, default)."""
        async with self.db.read() as conn:
            return [counts_wire(c) for c in await store.counts(conn, [user_id])]

    async def bulk_frame(self, user_id: str) -> str:
        """``unread.bulk``: what a presence socket gets when it opens (and after a bus outage)."""
        return encode({"event": "unread.bulk", "rooms": await self.of_user(user_id)})

    async def since_marker(self, user: Principal, ref: str, limit: int) -> dict[str, Any]:
        """What a catch-up reads (Second Me's ``CatchupSource``): the room's newest ``limit``
        messages after the caller's marker, tombstones skipped, oldest first; the marker stays."""
        room_id = await self._resolve(ref)
        async with self.db.read() as conn:
            room = await room_store.find_room(conn, room_id)
            rows = await store.unread_messages(conn, user.user_id, room_id, limit)
        return {
            "room_id": room_id,
            "name": room.name if room is not None else ref,
            "messages": [
                {
                    "seq": int(r.seq),
                    "author": r.username,
                    "body": r.body,
                    "created_at": iso(r.created_at),
                }
                for r in rows
            ],
        }

    async def notifications(
        self, user: Principal, *, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await store.list_notifications(conn, user.user_id, limit=limit, before=before)
        if rows is None:
            raise NotFound(f"no notification {before!r} of yours", code="notification_not_found")
        return [notification_wire(row) for row in rows]

    async def me(self, user: Principal, *, suspended: bool) -> dict[str, Any]:
        """``GET /city/me``."""
        async with self.db.read() as conn:
            owns = await room_store.rooms_created_by(conn, user.user_id)
            moderates = await moderation_store.moderated_by(conn, user.user_id)
        return {
            "user_id": user.user_id,
            "name": user.name,
            "admin": user.admin,
            "suspended": suspended,
            "moderates": moderates,
            "owns": owns,
        }

    # --- notifications ----------------------------------------------------------------------------
    def notify(self, room_id: str, items: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Notify, in the background, for committed messages ``(message, the users it newly
        mentions)``: each mentioned user, and the author of the message it replies to, once
        per message (``GroupCommit``'s ``notify``)."""
        by_sender: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
        for message, mentioned in items:
            by_sender.setdefault(str(message["author_user_id"]), []).append((message, mentioned))
        for sender, theirs in by_sender.items():
            self._tasks.spawn(self._notify_quietly(room_id, sender, theirs))

    async def _notify_quietly(
        self, room_id: str, sender: str, items: list[tuple[dict[str, Any], list[str]]]
    ) -> None:
        try:
            await self._notify(room_id, sender, items)
        except Exception:
            log.warning("notifications of %s in %s not stored", sender, room_id, exc_info=True)

    async def _notify(
        self, room_id: str, sender: str, items: list[tuple[dict[str, Any], list[str]]]
    ) -> None:
        wanted: list[tuple[str, int, str]] = []  # (user_id, seq, kind)
        await self._known.settled()  # a user seen here a moment ago is known
        async with self.db.read() as conn:
            for message, mentioned in items:
                seq = int(message["seq"])
                users = [(u, "mention") for u in mentioned]
                if (reply := message.get("reply_to_seq")) is not None:
                    author = await store.author_of(conn, room_id, int(reply))
                    if author is not None and author not in mentioned:
                        users.append((author, "reply"))
                wanted += [(u, seq, kind) for u, kind in users if u != sender]
            known = await store.known(conn, [u for u, _, _ in wanted])
        rows = []
        now = utcnow()
        for user_id, seq, kind in wanted:
            if user_id in known and await self._within_rate(sender, user_id):
                rows.append(
                    {
                        "id": new_id("ntf"),
                        "user_id": user_id,
                        "room_id": room_id,
                        "seq": seq,
                        "kind": kind,
                        "sender_id": sender,
                        "created_at": now,
                    }
                )
        if not rows:
            return
        async with self.db.begin() as conn:
            ids = await store.insert_notifications(conn, rows)
            if not ids:
                return
            listed = await store.notifications_by_id(conn, ids)
            recipients = sorted({str(row.n_user_id) for row in listed})
            counts = await store.counts(conn, recipients, room_id, listed_only=False)
        frames = [
            (str(row.n_user_id), encode({"event": "notification", **notification_wire(row)}))
            for row in listed
        ]
        frames += [(c[0], update_frame(c)) for c in counts]
        await self._quietly(frames)

    async def _within_rate(self, sender: str, recipient: str) -> bool:
        per_minute = self.settings.city_notify_rate
        try:
            await self.limiter.hit(
                f"notify:{sender}:{recipient}", rate=per_minute / 60, burst=per_minute
            )
        except RateLimited:
            return False
        return True

    async def _quietly(self, frames: list[tuple[str, str]]) -> None:
        """Personal events are sent after the commit: a bus failure is logged (the counts are
        read again by ``GET /city/me/unread`` and sent with ``unread.bulk`` after the outage)."""
        if not frames:
            return
        try:
            await self._personal.send(frames)
        except Exception:
            log.warning("personal events not sent", exc_info=True)
