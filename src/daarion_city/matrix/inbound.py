"""Matrix to city (SPEC 6b): the events of an application-service transaction, imported.

- ``m.room.message`` (``m.text``, ``m.notice``, ``m.emote``) from a user outside the puppet
  namespace, in a bridged room, becomes a city message: author the Matrix id, ``username`` their
  display name (``matrix_members``, kept from their ``m.room.member`` events), mentions from
  pills, a reply's target as ``reply_to_seq``. It is posted with a ``client_msg_id`` made from
  its event id, so a transaction the homeserver sends again (the gateway died before it
  answered) finds it stored instead of posting it twice.
- Its ``m.replace`` edits, its redactions and its ``m.reaction`` annotations (and their
  redactions) become city edits, deletions and reactions of the mapped message.
- The bridge's own events (a puppet's, the bot's, or any event id in the id map) are never
  imported: a city message sent to Matrix does not come back as a second one.
- What the city refuses (a ban, a mute, slow mode, a rate limit, a body too long, an unknown
  emoji, a Matrix id longer than a city id may be) is not imported, and the bot redacts it in
  the Matrix room (``reject``), so both rooms show the same conversation. The database being
  unavailable is raised: the transaction is answered with an error and the homeserver sends
  it again.
- A transaction is recorded (``matrix_transactions``) once all its events are committed; a
  repeat of its ``txnId``, also after a restart, imports nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from daarion_city.core.clock import utcnow
from daarion_city.core.errors import CityError, Unavailable
from daarion_city.core.validation import MAX_AUTHOR_ID
from daarion_city.identity.principal import Principal
from daarion_city.matrix.formats import from_matrix
from daarion_city.matrix.ids import MXID, city_user_of
from daarion_city.matrix.ports import CityRooms
from daarion_city.storage import matrix as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

TEXT_TYPES = frozenset({"m.text", "m.notice", "m.emote"})


def client_msg_id(event_id: str) -> str:
    return "mx." + hashlib.sha256(event_id.encode()).hexdigest()[:40]


class Importer:
    def __init__(
        self,
        db: Database,
        rooms: CityRooms,
        *,
        server_name: str,
        bot_id: str,
        reject: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.db = db
        self.rooms = rooms
        self.server_name = server_name
        self.bot_id = bot_id
        self.reject = reject  # (Matrix room id, event id): the bot redacts it
        self.imported = 0
        self.refused = 0

    async def transaction(self, txn_id: str, events: list[Any]) -> bool:
        """Import a transaction's events once; False when ``txn_id`` was done already."""
        async with self.db.read() as conn:
            if await store.transaction_done(conn, txn_id):
                return False
        for event in events:
            if isinstance(event, dict):
                await self._event(event)
        async with self.db.begin() as conn:
            await store.record_transaction(conn, txn_id, utcnow())
        return True

    def _ours(self, sender: str) -> bool:
        return sender == self.bot_id or city_user_of(sender, self.server_name) is not None

    async def _event(self, event: dict[str, Any]) -> None:
        sender, kind = event.get("sender"), event.get("type")
        event_id, matrix_room = event.get("event_id"), event.get("room_id")
        content = event.get("content")
        if not (
            isinstance(sender, str)
            and isinstance(event_id, str)
            and isinstance(matrix_room, str)
            and isinstance(content, dict)
        ):
            return
        if self._ours(sender) or not MXID.fullmatch(sender):
            return
        async with self.db.read() as conn:
            room = await store.room_of_matrix(conn, matrix_room)
            seen = await store.seq_of(conn, event_id) if room is not None else None
            name = await store.member_name(conn, sender) if room is not None else None
        if room is None or seen is not None:
            return  # not a bridged room; or imported already, or sent by the bridge
        if kind == "m.room.member":
            await self._member(sender, content)
            return
        user = Principal(sender, (name or sender[1:].split(":")[0])[:100])
        try:
            if len(sender) > MAX_AUTHOR_ID:
                raise CityError(f"{sender} is longer than a city id may be", code="id_too_long")
            if kind == "m.room.message":
                await self._message(room.id, user, event_id, content)
            elif kind == "m.reaction":
                await self._reaction(room.id, user, event_id, content)
            elif kind == "m.room.redaction":
                redacts = event.get("redacts") or content.get("redacts")
                if isinstance(redacts, str):
                    await self._redaction(room.id, user, redacts)
            else:
                return
        except Unavailable:
            raise
        except CityError as exc:
            self.refused += 1
            log.info("not imported from Matrix: %s %s (%s)", kind, event_id, exc.detail)
            if kind in ("m.room.message", "m.reaction"):
                await self.reject(matrix_room, event_id)
            return
        self.imported += 1

    async def _member(self, sender: str, content: dict[str, Any]) -> None:
        name = content.get("displayname")
        if isinstance(name, str) and name.strip():
            async with self.db.begin() as conn:
                await store.set_member_name(conn, sender, name.strip()[:100], utcnow())

    async def _target(self, relates: Any) -> tuple[str, int] | None:
        target = relates.get("event_id") if isinstance(relates, dict) else None
        if not isinstance(target, str):
            return None
        async with self.db.read() as conn:
            return await store.seq_of(conn, target)

    async def _message(
        self, room_id: str, user: Principal, event_id: str, content: dict[str, Any]
    ) -> None:
        if content.get("msgtype") not in TEXT_TYPES:
            return
        relates = content.get("m.relates_to")
        if isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
            new = content.get("m.new_content")
            target = await self._target(relates)
            body = from_matrix(new, self.server_name) if isinstance(new, dict) else None
            if target is not None and target[0] == room_id and body is not None:
                await self.rooms.edit(user, room_id, target[1], body)
            return
        body = from_matrix(content, self.server_name)
        if body is None:
            return
        replied = None
        if isinstance(relates, dict):
            replied = await self._target(relates.get("m.in_reply_to"))
        reply_to = replied[1] if replied is not None and replied[0] == room_id else None
        seq = await self.rooms.post(user, room_id, body, client_msg_id(event_id), reply_to)
        async with self.db.begin() as conn:
            await store.map_event(conn, room_id, seq, event_id, "matrix")

    async def _reaction(
        self, room_id: str, user: Principal, event_id: str, content: dict[str, Any]
    ) -> None:
        relates = content.get("m.relates_to")
        if not isinstance(relates, dict) or relates.get("rel_type") != "m.annotation":
            return
        key, target = relates.get("key"), await self._target(relates)
        if not isinstance(key, str) or target is None or target[0] != room_id:
            return
        await self.rooms.react(user, room_id, target[1], key, add=True)
        async with self.db.begin() as conn:
            await store.map_reaction(
                conn,
                "matrix",
                room_id=room_id,
                seq=target[1],
                user_id=user.user_id,
                emoji=key,
                event_id=event_id,
            )

    async def _redaction(self, room_id: str, user: Principal, redacts: str) -> None:
        async with self.db.read() as conn:
            reaction = await store.reaction_of(conn, redacts)
            message = await store.seq_of(conn, redacts) if reaction is None else None
        if reaction is not None:
            if reaction.user_id == user.user_id:
                await self.rooms.react(user, room_id, int(reaction.seq), reaction.emoji, add=False)
                async with self.db.begin() as conn:
                    await store.unmap_reaction(conn, redacts)
        elif message is not None and message[0] == room_id:
            await self.rooms.delete(user, room_id, message[1])
