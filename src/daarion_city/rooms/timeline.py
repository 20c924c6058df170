"""The room timeline's other events (SPEC section 9 and 12): an edit, a deletion or a reaction
change of a message takes the room's next ``seq`` in the transaction that makes it, goes
through the room's commit queue with the posts (``GroupCommit.change``: one order for the
commit, the answer and the fan-out), and reaches every socket as its own frame. A change that
changes nothing (the same body again, a deleted message deleted again, a reaction repeated or
one that is not there removed) takes no seq and sends nothing: it is answered with the message
as it is.

The timeline read back in order (``timeline_frames``) is what a socket resuming with
``since_seq``, a hub healing a gap and ``GET .../events`` get: each event as the socket sends
it, with its message as it is now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from daarion_city.core.clock import utcnow
from daarion_city.core.errors import Conflict, Forbidden, NotFound
from daarion_city.feed.service import FeedService
from daarion_city.identity.principal import Principal
from daarion_city.rooms.changes import Change, ChangeResult
from daarion_city.rooms.frames import message_frame, reaction_frame, timeline_frame
from daarion_city.rooms.mentions import mentions_in
from daarion_city.rooms.policy import Policies, RoomPolicy
from daarion_city.rooms.powers import Power, check
from daarion_city.rooms.reactions import Reaction, normalize_emoji
from daarion_city.rooms.schemas import message_wire
from daarion_city.storage import moderation as moderation_store
from daarion_city.storage import timeline as store
from daarion_city.storage.database import Database

Submit = Callable[[Principal, str, Change | Reaction, bool], Awaitable[ChangeResult]]


class Timeline:
    """Edits, deletions and reactions of a room's messages: each checked, then queued with
    the room's posts (``submit``: ``GroupCommit.change``; edits and reactions take from the
    user's message bucket)."""

    def __init__(
        self,
        db: Database,
        feed: FeedService,
        *,
        max_mentions: int,
        resolve: Callable[[str], Awaitable[str]],
        submit: Submit,
        policies: Policies,
    ) -> None:
        self.db = db
        self.feed = feed
        self.max_mentions = max_mentions
        self._resolve = resolve
        self._submit = submit
        self._policies = policies

    async def edit_message(self, user: Principal, ref: str, seq: int, body: str) -> dict[str, Any]:
        room_id = await self._resolve(ref)
        (await self._policies.of(room_id)).check_voice(user)
        change = self.edit(user, room_id, seq, body)
        return (await self._submit(user, room_id, change, True)).answer

    async def delete_message(self, user: Principal, ref: str, seq: int) -> dict[str, Any]:
        room_id = await self._resolve(ref)
        policy = await self._policies.of(room_id)
        return (
            await self._submit(user, room_id, self.delete(user, policy, room_id, seq), False)
        ).answer

    async def set_reaction(
        self, user: Principal, ref: str, seq: int, raw_emoji: str, *, add: bool
    ) -> dict[str, Any]:
        room_id = await self._resolve(ref)
        (await self._policies.of(room_id)).check_voice(user)
        change = Reaction(user.user_id, seq, normalize_emoji(raw_emoji), add)
        return (await self._submit(user, room_id, change, True)).answer

    def edit(self, user: Principal, room_id: str, seq: int, body: str) -> Change:
        mentions = mentions_in(body, self.max_mentions)

        async def run() -> ChangeResult:
            async with self.db.begin() as conn:
                row = await self._target(conn, room_id, seq)
                if row.author_user_id != user.user_id:
                    raise Forbidden("only its author may edit a message", code="forbidden")
                if row.deleted:
                    raise Conflict("the message is deleted", code="message_deleted")
                if row.body == body:
                    return ChangeResult(message_wire(row), None)
                at = utcnow()
                event_seq = await store.take_seq(conn, room_id)
                await store.update_message(
                    conn, room_id, seq, body=body, mentions=mentions, edited_at=at
                )
                await store.insert_event(
                    conn,
                    room_id=room_id,
                    seq=event_seq,
                    kind="edit",
                    target_seq=seq,
                    user_id=user.user_id,
                    created_at=at,
                )
                message = message_wire(await self._target(conn, room_id, seq))
            added = [m for m in mentions if m not in row.mentions]
            frame = _frame("room.message.edit", room_id, event_seq, message)
            return ChangeResult(message, frame, mentioned=added)

        return run

    def delete(self, user: Principal, policy: RoomPolicy, room_id: str, seq: int) -> Change:
        """A deletion by its author, or by a user of a higher rank than the author's and at
        least a moderator's (``deleted_by: "moderator"``, audited in the same transaction)."""

        async def run() -> ChangeResult:
            async with self.db.begin() as conn:
                row = await self._target(conn, room_id, seq)
                deleted_by = "author"
                if row.author_user_id != user.user_id:
                    author = policy.rank_of(row.author_user_id or "")
                    check(policy.rank(user), Power.DELETE_MESSAGE, author)
                    deleted_by = "moderator"
                if row.deleted:
                    return ChangeResult(message_wire(row), None)
                if deleted_by == "moderator":
                    await moderation_store.insert_audit(
                        conn,
                        moderation_store.audit_row(
                            room_id,
                            "message_deleted",
                            user.user_id,
                            target_user_id=row.author_user_id,
                            target_seq=seq,
                        ),
                    )
                at = utcnow()
                event_seq = await store.take_seq(conn, room_id)
                await store.update_message(conn, room_id, seq, **store.tombstone(deleted_by))
                await store.clear_reactions(conn, room_id, seq)
                await store.insert_event(
                    conn,
                    room_id=room_id,
                    seq=event_seq,
                    kind="delete",
                    target_seq=seq,
                    user_id=user.user_id,
                    created_at=at,
                )
                event = await self.feed.record(
                    conn,
                    "message_deleted",
                    room_id=room_id,
                    user_id=user.user_id,
                    payload={"message_id": row.id},
                )
                message = message_wire(await self._target(conn, room_id, seq))
            frame = _frame("room.message.delete", room_id, event_seq, message)
            return ChangeResult(message, frame, [event])

        return run

    @staticmethod
    async def _target(conn: Any, room_id: str, seq: int) -> Any:
        row = await store.lock_message(conn, room_id, seq)
        if row is None:
            raise NotFound(f"no message {seq} in this room", code="message_not_found")
        return row


def _frame(event: str, room_id: str, seq: int, message: dict[str, Any]) -> tuple[int, str]:
    return seq, timeline_frame(event, room_id, seq, message)


async def timeline_frames(
    db: Database, room_id: str, after_seq: int, limit: int
) -> list[tuple[int, str]]:
    """The timeline after ``after_seq`` as the sockets get it, each message as it is now."""
    async with db.read() as conn:
        rows, messages = await store.timeline_after(conn, room_id, after_seq, limit)
    frames: list[tuple[int, str]] = []
    for row in rows:
        seq, target = int(row.seq), messages[int(row.target_seq)]
        if row.kind == "message":
            frames.append((seq, message_frame(room_id, message_wire(target))))
        elif row.kind == "reaction":
            frame = reaction_frame(
                room_id,
                seq,
                int(row.target_seq),
                row.user_id,
                row.emoji,
                row.op,
                target.reactions,
            )
            frames.append((seq, frame))
        else:
            event = "room.message.edit" if row.kind == "edit" else "room.message.delete"
            frames.append(_frame(event, room_id, seq, message_wire(target)))
    return frames
