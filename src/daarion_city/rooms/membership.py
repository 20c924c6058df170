"""Who joined a room (``POST .../join`` and ``.../leave``): persisted and idempotent; a change
writes its ``member_joined`` / ``member_left`` feed event in its transaction and sends
``room.member`` to the room's sockets. A user banned from the room cannot join it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from daarion_city.core.clock import utcnow
from daarion_city.feed.service import FeedService, RecordedEvent
from daarion_city.identity.principal import Principal
from daarion_city.realtime.hub import RoomHub
from daarion_city.realtime.protocol import encode
from daarion_city.rooms.commit import publish_quietly
from daarion_city.rooms.policy import Policies
from daarion_city.storage import rooms as store
from daarion_city.storage.database import Database


class Membership:
    def __init__(
        self,
        *,
        db: Database,
        hub: RoomHub,
        feed: FeedService,
        policies: Policies,
        resolve: Callable[[str], Awaitable[str]],
        changed: Callable[[str], None],
    ) -> None:
        self.db = db
        self.hub = hub
        self.feed = feed
        self.policies = policies
        self._resolve = resolve
        self._changed = changed

    async def set(self, user: Principal, ref: str, *, join: bool) -> str:
        room_id = await self._resolve(ref)
        if join:
            (await self.policies.of(room_id)).check_banned(user)
        event: RecordedEvent | None = None
        async with self.db.begin() as conn:
            if join:
                changed = await store.add_member(conn, room_id, user.user_id, user.name, utcnow())
            else:
                changed = await store.remove_member(conn, room_id, user.user_id)
            if changed:
                event = await self.feed.record(
                    conn,
                    "member_joined" if join else "member_left",
                    room_id=room_id,
                    user_id=user.user_id,
                    payload={"name": user.name},
                )
        if event is not None:
            self._changed(room_id)
            frame = encode(
                {
                    "event": "room.member",
                    "room_id": room_id,
                    "user_id": user.user_id,
                    "name": user.name,
                    "membership": "join" if join else "leave",
                }
            )
            await publish_quietly(self.hub.publish_event(room_id, frame))
            await self.feed.publish(event)
        return room_id
