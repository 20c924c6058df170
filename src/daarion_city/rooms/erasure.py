"""What the rooms keep of a user, for ``GET /city/me/export`` and ``DELETE /city/me`` (SPEC 11
and 12). Registered with the identity's ``YourData`` by ``app/wiring.py``.

The erasure goes through the rooms' own paths, so every open page, every instance and the
Matrix bridge see it as they see any change: the user's reactions are taken away as reaction
changes; their messages become tombstones (``deleted_by: "erasure"``, named ``deleted user``)
in chunks of ``CHUNK``, each chunk one change in its room's commit queue (the room's next seqs,
a ``room.message.delete`` frame and a ``message_deleted`` feed event per message; the bridge
redacts the Matrix copies with its bot); they leave their rooms (``room.member``). Then their
read markers, notifications, moderator roles and known-user row are removed, and their name is
taken out of the feed's membership events. Rooms they created keep their id as ``owner_id``;
reports and audit entries keep ids only.

Every step may run again: an erasure cut short (a crash) is finished by the next start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daarion_city.core.clock import iso, utcnow
from daarion_city.feed.service import FeedService
from daarion_city.identity.principal import Principal
from daarion_city.rooms.changes import Change, ChangeResult
from daarion_city.rooms.commit import GroupCommit
from daarion_city.rooms.frames import timeline_frame
from daarion_city.rooms.membership import Membership
from daarion_city.rooms.policy import Policies
from daarion_city.rooms.reactions import Reaction
from daarion_city.rooms.schemas import message_wire
from daarion_city.storage import moderation as moderation_store
from daarion_city.storage import timeline as timeline_store
from daarion_city.storage import yourdata as store
from daarion_city.storage.database import Database

CHUNK = 500  # messages made tombstones in one transaction (and one bus envelope)


def _plain(row: Any, *, leave: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row as JSON: its columns, times in ISO 8601, without the columns named in ``leave``."""
    return {  # str(): a column's name may be SQLAlchemy's quoted_name, which orjson refuses
        str(key): iso(value) if isinstance(value, datetime) else value
        for key, value in row._asdict().items()
        if key not in leave
    }


class RoomsData:
    def __init__(
        self,
        db: Database,
        feed: FeedService,
        commit: GroupCommit,
        membership: Membership,
        policies: Policies,
    ) -> None:
        self.db = db
        self.feed = feed
        self.commit = commit
        self.membership = membership
        self.policies = policies

    async def export(self, user_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            profile = await store.profile(conn, user_id)
            messages = await store.authored(conn, user_id)
            rows = await store.export_rows(conn, user_id)
        suspension = rows["suspension"]
        return {
            "profile": None if profile is None else _plain(profile),
            "messages": [message_wire(m) for m in messages],
            "memberships": [_plain(r, leave=("user_id",)) for r in rows["memberships"]],
            "roles": {
                "moderates": [r.room_id for r in rows["moderates"]],
                "owns": [r.id for r in rows["owns"]],
            },
            "sanctions": [_plain(r, leave=("user_id",)) for r in rows["sanctions"]],
            "suspension": _plain(suspension[0], leave=("user_id",)) if suspension else None,
            "read_markers": [_plain(r, leave=("user_id",)) for r in rows["read_markers"]],
            "notifications": [_plain(r, leave=("pos", "user_id")) for r in rows["notifications"]],
            "reactions": [_plain(r, leave=("pos", "user_id")) for r in rows["reactions"]],
            # A report's copy of the reported text is its author's, not the reporter's.
            "reports": [
                _plain(r, leave=("pos", "reporter_id", "text", "author_id"))
                for r in rows["reports"]
            ],
        }

    async def erase(self, user_id: str) -> None:
        user = Principal(user_id, store.ERASED_NAME, False)
        async with self.db.read() as conn:
            rows = await store.export_rows(conn, user_id)
            rooms = await store.rooms_with_messages(conn, user_id)
        for r in rows["reactions"]:
            reaction = Reaction(user_id, int(r.seq), str(r.emoji), False)
            await self.commit.change(user, str(r.room_id), reaction, False)
        for room_id in rooms:
            done = False
            while not done:  # a chunk at a time, until none is left
                chunk = self._tombstones(user, room_id)
                done = (await self.commit.change(user, room_id, chunk, False)).frame is None
        for m in rows["memberships"]:
            await self.membership.set(user, str(m.room_id), join=False)
        async with self.db.begin() as conn:
            moderated = await moderation_store.moderated_by(conn, user_id)
            await store.rename_tombstones(conn, user_id)
            await store.remove_rest(conn, user_id)
        for room_id in moderated:
            await self.policies.announce(room_id)
        self.feed.changed()

    def _tombstones(self, user: Principal, room_id: str) -> Change:
        """The next ``CHUNK`` of the user's messages in the room, made tombstones."""

        async def run() -> ChangeResult:
            async with self.db.begin() as conn:
                pairs = await store.erase_messages(conn, room_id, user.user_id, CHUNK, utcnow())
                if not pairs:
                    return ChangeResult({"erased": 0}, None)
                rows = await timeline_store.messages_at(conn, room_id, [s for _, s in pairs])
                events = await self.feed.record_many(
                    conn,
                    "message_deleted",
                    [
                        {
                            "room_id": room_id,
                            "user_id": user.user_id,
                            "agent_id": None,
                            "payload": {"message_id": rows[seq].id},
                        }
                        for _, seq in pairs
                    ],
                )
            frames = [
                (at, timeline_frame("room.message.delete", room_id, at, message_wire(rows[seq])))
                for at, seq in pairs
            ]
            return ChangeResult({"erased": len(pairs)}, frames[0], events, more=frames[1:])

        return run
