"""The commit of a room's timeline changes (edits, deletions and reaction changes), in their turn
among the room's posts in its commit queue (``rooms/commit.GroupCommit``): each committed, then
answered, then announced in order to this instance's sockets and the bus (with a notice on
``city:rooms`` for the other instances' reads). Consecutive reaction changes commit together
(``rooms/reactions.commit_reactions``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daarion_city.core.errors import CityError
from daarion_city.feed.service import FeedService
from daarion_city.realtime.hub import RoomHub
from daarion_city.rooms.changes import Change, ChangeResult
from daarion_city.rooms.reactions import Reaction, commit_reactions
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

# Notices that a room's timeline changed in ways no feed event tells (edits, reactions): every
# instance drops what its reads show of the room (RoomService._on_notice).
ROOM_NOTICES = "city:rooms"

Notify = Callable[[str, list[tuple[dict[str, Any], list[str]]]], None]
"""``(room_id, [(message, the users it newly mentions)])``: the notifications of committed
messages, made in the background after they are announced (``rooms/unread.Unread.notify``)."""


@dataclass(slots=True)
class QueuedChange:
    """An edit or deletion (``rooms/timeline.py``) or a reaction change (``rooms/reactions.py``:
    consecutive ones commit together) waiting in its room's queue."""

    run: Change | Reaction
    future: asyncio.Future[ChangeResult]
    allowed: asyncio.Future[None] | None


class ChangeCommit:
    """Timeline changes of rooms: committed, answered, announced (see the module)."""

    def __init__(
        self,
        db: Database,
        hub: RoomHub,
        feed: FeedService,
        committed: Callable[[str], None],
        notify: Notify,
    ) -> None:
        self.db = db
        self.hub = hub
        self.feed = feed
        self.committed = committed
        self.notify = notify

    async def react(self, room_id: str, group: list[QueuedChange]) -> None:
        """Reaction changes, committed together (``commit_reactions``); when their transaction
        fails, each is tried alone, so only a change that fails by itself gets the error."""
        if not group:
            return
        outcomes: list[ChangeResult | Exception]
        try:
            outcomes = list(
                await commit_reactions(
                    self.db, room_id, [i.run for i in group if isinstance(i.run, Reaction)]
                )
            )
        except Exception as exc:
            if len(group) > 1 and not isinstance(exc, CityError):
                for item in group:
                    await self.react(room_id, [item])
                return
            outcomes = [exc] * len(group)
        done = []
        for item, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, ChangeResult):
                done.append((item, outcome))
            elif not item.future.done():
                item.future.set_exception(outcome)
        await self._announce(room_id, done)

    async def apply(self, room_id: str, item: QueuedChange) -> None:
        """An edit or a deletion: committed, then answered and announced (``_announce``)."""
        try:
            if item.allowed is not None:
                await item.allowed
            assert not isinstance(item.run, Reaction)
            result = await item.run()
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        await self._announce(room_id, [(item, result)])

    async def _announce(self, room_id: str, done: list[tuple[QueuedChange, ChangeResult]]) -> None:
        """Committed changes: answered, then announced in order (to this instance's sockets,
        then the bus, with a notice for the other instances' reads)."""
        frames = [
            frame
            for _, result in done
            if result.frame is not None
            for frame in (result.frame, *result.more)
        ]
        if frames:
            self.committed(room_id)
        for item, result in done:
            if not item.future.done():
                item.future.set_result(result)
            if result.mentioned:  # an edit's new mentions (its reply notified at its creation)
                message = {**result.answer, "reply_to_seq": None}
                self.notify(room_id, [(message, result.mentioned)])
        if not frames:
            return
        items = [self.hub.messages_item(room_id, frames), (ROOM_NOTICES, room_id.encode())]
        if events := [event for _, result in done for event in result.events]:
            items.append(self.feed.item(events))
        try:
            await self.hub.bus.publish_many(items)
        except Exception:
            self.hub.publish_failed(room_id, frames[-1][0])
            log.warning("publishing on the bus failed", exc_info=True)
