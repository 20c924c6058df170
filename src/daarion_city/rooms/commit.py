"""The group commit of room messages: how a post is stored, acknowledged and announced.

A message, whichever way it came in (``POST /city/rooms/{room}/messages``, its lane, or a
``room.message.send`` frame), takes one path: ``GroupCommit.post``. Posts to one room wait in
that room's queue; one task per room commits whatever has queued up in one transaction (the
message rows with the room's next seqs and their ``room_message`` feed events), and the
batches of rooms that become ready together share one statement (``store.batch_commit``).
What it guarantees:

- Acknowledge after commit: a post is answered (``PostResult``: the HTTP 201 or the
  ``room.message.ack``) only after the transaction that stored it has committed. A caller that
  goes away does not undo its commit (a retry finds it). Posts the rate limit refused are
  answered its error and store nothing.
- Publish after commit: a batch reaches this instance's sockets and the bus only once it is
  committed and answered; nothing uncommitted is ever delivered.
- ``seq`` order: a room's seqs are taken under its row lock, gapless (a rollback leaves no
  gap), and the room's next batch commits only after this one is published, so this
  instance's sockets and the bus get a room's messages in ``seq`` order, and every other
  instance's hub delivers them from the bus in that order.
- A retry: a repeated ``client_msg_id`` (same author, same room) writes nothing and is answered
  the stored message with ``created=False`` (``Idempotent-Replayed`` over HTTP), whether an
  earlier commit stored it or an earlier post of the same batch. One bad post does not fail
  the others that shared its commit: they are then committed one by one, so only the post that
  fails by itself gets the error (a store that is down fails them all at once).
- A failed publish is logged, never turned into a failed post: the post stays committed and
  acknowledged; the hub remembers the room's newest seq and announces it once the bus is back,
  and the hubs that missed messages read them from the database (feed streams resume with
  ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from daarion_city.config import Settings
from daarion_city.core.errors import CityError, RateLimited, Sanctioned
from daarion_city.core.metrics import Metrics
from daarion_city.core.tasks import TaskSet
from daarion_city.feed.service import FeedService
from daarion_city.identity.principal import Principal
from daarion_city.ratelimit import RateLimiter
from daarion_city.realtime.hub import RoomHub
from daarion_city.rooms.batch import (
    BatchWriter,
    Committed,
    Pending,
    PostResult,
    allowed_posts,
    answer,
)
from daarion_city.rooms.changecommit import ChangeCommit, Notify, QueuedChange
from daarion_city.rooms.changes import Change, ChangeResult
from daarion_city.rooms.mentions import mentions_in
from daarion_city.rooms.policy import Policies
from daarion_city.rooms.reactions import Reaction
from daarion_city.rooms.typing import RoomTyping
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

COMMIT_BATCH = 200


async def publish_quietly(publishing: Awaitable[None]) -> None:
    """Publishing happens after a commit: a bus failure is logged, never turned into a
    failed request (the hubs heal gaps from the database)."""
    try:
        await publishing
    except Exception:
        log.warning("publishing on the bus failed", exc_info=True)


class GroupCommit:
    """Posts of users to rooms: stored together, answered, then announced (see the module)."""

    def __init__(
        self,
        *,
        db: Database,
        hub: RoomHub,
        feed: FeedService,
        limiter: RateLimiter,
        settings: Settings,
        metrics: Metrics,
        tasks: TaskSet,
        resolve: Callable[[str], Awaitable[str]],
        typing: RoomTyping,
        committed: Callable[[str], None],
        notify: Notify,
        policies: Policies,
    ) -> None:
        self.hub = hub
        self.feed = feed
        self.limiter = limiter
        self.settings = settings
        self.typing = typing
        self._tasks = tasks
        self._resolve = resolve
        self._committed = committed
        self._notify = notify
        self._policies = policies
        self._db = db
        self._writer = BatchWriter(db, feed, metrics, tasks)
        self._changes = ChangeCommit(db, hub, feed, committed, notify)
        # room -> posts (and timeline changes) waiting for a commit, in arrival order
        self._pending: dict[str, list[Pending | QueuedChange]] = {}
        self._committing: set[str] = set()

    async def post(
        self,
        user: Principal,
        ref: str,
        body: str,
        client_msg_id: str | None = None,
        reply_to_seq: int | None = None,
    ) -> PostResult:
        """Store a message (idempotent on ``client_msg_id``), then broadcast it.

        Group commit: posts to one room wait in that room's queue, and one task commits whatever
        has queued up in one transaction (the room's row lock, the idempotency check, the
        messages and their feed events), answers them, then announces them in ``seq`` order
        (``_announce``). Under load many posts share a commit; alone, a post commits at once.
        Each post is answered only after its commit."""
        room_id = await self._resolve(ref)
        mentions = mentions_in(body, self.settings.city_max_mentions)
        try:
            await self._policies.admit(room_id, user)
            if reply_to_seq is not None:
                await self._writer.check_reply(room_id, reply_to_seq)
            # The rate limit's round trip runs while the post waits for its commit; the commit
            # takes only the posts it allowed and answers the others 429.
            allowed = self._hit(user)
            future = asyncio.get_running_loop().create_future()
            item = Pending(user, body, client_msg_id, reply_to_seq, mentions, future, allowed)
            self._enqueue(room_id, item)
            # Shielded: a caller that goes away does not undo its commit (a retry finds it).
            return await asyncio.shield(future)
        except (Sanctioned, RateLimited):  # a replay is answered before any sanction or limit
            if client_msg_id is not None and (
                stored := await self._writer.stored(room_id, user, client_msg_id)
            ):
                return stored
            raise

    async def change(
        self, user: Principal, room_id: str, run: Change | Reaction, limited: bool
    ) -> ChangeResult:
        """A timeline change (rooms/timeline.py), committed in its turn among the room's posts,
        answered, then announced; ``limited`` takes from the user's message bucket."""
        allowed = self._hit(user) if limited else None
        item = QueuedChange(run, asyncio.get_running_loop().create_future(), allowed)
        self._enqueue(room_id, item)
        return await asyncio.shield(item.future)

    def _hit(self, user: Principal) -> asyncio.Future[None]:
        """The user's message bucket asked, without a task: the future of its verdict."""
        return self.limiter.verdict(
            f"msg:{user.user_id}",
            rate=self.settings.city_message_rate,
            burst=self.settings.city_message_burst,
        )

    def _enqueue(self, room_id: str, item: Pending | QueuedChange) -> None:
        self._pending.setdefault(room_id, []).append(item)
        if room_id not in self._committing:
            self._committing.add(room_id)
            self._tasks.spawn(self._commit_loop(room_id), name=f"commit-{room_id}")

    async def _commit_loop(self, room_id: str) -> None:
        try:
            while queue := self._pending.get(room_id):
                head = queue[0]
                if isinstance(head, QueuedChange) and isinstance(head.run, Reaction):
                    group: list[QueuedChange] = []
                    for item in queue[:COMMIT_BATCH]:  # the reaction changes up to the next item
                        if not isinstance(item, QueuedChange) or not isinstance(item.run, Reaction):
                            break
                        group.append(item)
                    del queue[: len(group)]
                    await self._changes.react(room_id, await allowed_posts(group))
                    continue
                if isinstance(head, QueuedChange):
                    del queue[0]
                    await self._changes.apply(room_id, head)
                    continue
                batch: list[Pending] = []
                for item in queue[:COMMIT_BATCH]:  # the posts up to the next change
                    if isinstance(item, QueuedChange):
                        break
                    batch.append(item)
                del queue[: len(batch)]
                batch = await allowed_posts(batch)
                if not batch:
                    continue
                try:
                    committed = await self._writer.commit(room_id, batch)
                except Exception as exc:
                    if len(batch) > 1 and not isinstance(exc, CityError):
                        # One bad post must not fail the others that shared its commit: each
                        # is tried alone, so only a post that fails by itself gets the error.
                        # (A store that is down fails them all at once instead.)
                        await self._commit_each(room_id, batch)
                        continue
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                await self._settle(room_id, batch, committed)
        finally:
            self._committing.discard(room_id)
            if not self._pending.get(room_id):
                self._pending.pop(room_id, None)

    async def _commit_each(self, room_id: str, batch: list[Pending]) -> None:
        for item in batch:
            try:
                committed = await self._writer.commit(room_id, [item])
            except Exception as exc:  # this post's own failure, answered to it alone
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                await self._settle(room_id, [item], committed)

    async def _settle(self, room_id: str, batch: list[Pending], committed: Committed) -> None:
        """After a commit: what reads show of the room is dropped (``committed``), then the
        posts are answered (so a writer reads its own writes), then the batch is announced."""
        if committed.frames:
            self._committed(room_id)
        answer(batch, committed.results)
        await self._announce(room_id, committed)

    async def _announce(self, room_id: str, committed: Committed) -> None:
        """After the answers: a committed batch to the bus in one round trip (its messages as one
        envelope, one write per socket, then their feed events as another); this instance's
        sockets get it during the publish, before the round trip. The answers do not wait for
        the bus: a publish that fails is healed like any lost one (hubs read the gap from the
        database; feed streams resume with Last-Event-ID). The next batch of the room commits
        after this one is published, so the bus carries a room's messages in ``seq`` order."""
        if frames := committed.frames:
            items = [self.hub.messages_item(room_id, frames), self.feed.item(committed.events)]
            try:
                await self.hub.bus.publish_many(items)
            except Exception:
                self.hub.publish_failed(room_id, frames[-1][0])
                log.warning("publishing on the bus failed", exc_info=True)
        for user in committed.users:
            self.typing.clear(room_id, user)
        notifying = [
            (r.message, r.message["mentions"])
            for r in committed.results
            if r.created and (r.message["mentions"] or r.message["reply_to_seq"] is not None)
        ]
        if notifying:  # most messages mention nobody and reply to nothing
            self._notify(room_id, notifying)
