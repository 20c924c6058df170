"""The rooms bridge (SPEC 6b): which city rooms are bridged, their Matrix rooms, and the two
directions (``outbound.Outbound``, ``inbound.Importer``) running.

Each room named by ``MATRIX_BRIDGE_ROOMS`` (slugs, or ``*`` for every room, rooms made later
too) is bridged to the Matrix room of the alias ``#city_<slug>:<server>``: created by the bot
(public, history readable by anyone, named and described as the city room) the first time it
is needed, or adopted when the alias exists and the bot has power level 100 in that room (else
the room is left unbridged, and the log says why). The mapping is stored on the room
(``matrix_room_id``, ``matrix_room_alias``). While the homeserver cannot be reached the mapping
is tried again with backoff; city traffic never waits for it.

In a cluster one instance sends (the holder of a PostgreSQL advisory lock; another takes over
when its connection ends); any instance imports the transactions the homeserver pushes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import sqlalchemy as sa

from daarion_city.config import Settings
from daarion_city.core.tasks import TaskSet
from daarion_city.matrix.client import HomeserverClient, HomeserverUnavailable, MatrixError
from daarion_city.matrix.inbound import Importer
from daarion_city.matrix.outbound import Outbound
from daarion_city.matrix.ports import CityRooms
from daarion_city.storage import matrix as store
from daarion_city.storage.database import Database

log = logging.getLogger(__name__)

ADMIN_LEVEL = 100
RESCAN = 30.0  # seconds between looks for rooms to bridge that are not yet
LEADER_LOCK = 0x6D617472  # the advisory lock of the instance that sends ("matr")


def alias_localpart(slug: str) -> str:
    return f"city_{slug}"


# Room versions 1-11 give creators no power of their own (their level is in m.room.power_levels);
# from version 12 (MSC4289) the creators rank above every level and are not listed there.
_LISTED_CREATORS = frozenset(str(v) for v in range(1, 12))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def bot_level(state: list[dict[str, Any]], bot_id: str) -> float:
    """The bot's power level in a room, from its state (a creator of a room of version 12 or
    later: infinite)."""
    by_type = {(e.get("type"), e.get("state_key")): e for e in state}
    create = by_type.get(("m.room.create", ""), {})
    content = _dict(create.get("content"))
    creators = {create.get("sender"), *(content.get("additional_creators") or [])}
    if bot_id in creators and str(content.get("room_version", "1")) not in _LISTED_CREATORS:
        return float("inf")
    levels = _dict(by_type.get(("m.room.power_levels", ""), {}).get("content"))
    level = _dict(levels.get("users")).get(bot_id, levels.get("users_default", 0))
    return float(level) if isinstance(level, int | float) else 0.0


class RoomsBridge:
    def __init__(
        self,
        db: Database,
        client: HomeserverClient,
        settings: Settings,
        rooms: CityRooms,
        *,
        bot_id: str,
    ) -> None:
        self.db = db
        self.client = client
        self.server_name = settings.matrix_server_name
        self.bot_id = bot_id
        self.backfill = settings.matrix_bridge_backfill
        wanted = [s.strip() for s in settings.matrix_bridge_rooms.split(",") if s.strip()]
        self.slugs: list[str] | None = None if "*" in wanted else wanted
        self.outbound = Outbound(
            db,
            client,
            server_name=self.server_name,
            bot_id=bot_id,
            poll=settings.matrix_bridge_poll,
        )
        self.city = rooms
        self.importer = Importer(
            db, rooms, server_name=self.server_name, bot_id=bot_id, reject=self._reject
        )
        self._tasks = TaskSet("matrix-rooms")
        self._rescan = asyncio.Event()

    async def start(self) -> None:
        self._tasks.spawn(self._map_rooms(), name="matrix-rooms-map")
        self._tasks.spawn(self._send(), name="matrix-rooms-send")

    async def stop(self) -> None:
        await self._tasks.close()

    def committed(self, room_id: str) -> None:
        """A room's timeline changed on this instance (the rooms' listener)."""
        if room_id in self.outbound.rooms:
            self.outbound.wake(room_id)
        elif self.slugs is None:
            self._rescan.set()  # a room made since the last look

    # --- the rooms' mapping -------------------------------------------------------------------
    async def _map_rooms(self) -> None:
        failures = 0
        while True:
            try:
                await self.map_once()
                failures = 0
                timeout = RESCAN  # a room refused (alias held by another) looked at then
            except (HomeserverUnavailable, MatrixError) as exc:
                failures += 1
                timeout = min(30.0, 0.5 * 2 ** min(failures, 8))
                log.warning("Matrix rooms not mapped yet (%s); again in %.1fs", exc.detail, timeout)
            except Exception:
                failures += 1
                timeout = min(30.0, 0.5 * 2 ** min(failures, 8))
                log.exception("Matrix rooms not mapped; again in %.1fs", timeout)
            if not self._rescan.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rescan.wait(), timeout)
            self._rescan.clear()

    async def map_once(self) -> None:
        """Map the rooms to bridge that are not yet (a room refused stays unmapped)."""
        async with self.db.read() as conn:
            rows = await store.rooms_to_bridge(conn, self.slugs)
        for row in rows:
            if row.id in self.outbound.rooms:
                continue
            alias = f"#{alias_localpart(row.slug)}:{self.server_name}"
            matrix_room = row.matrix_room_id or await self._matrix_room(row, alias)
            if matrix_room is None:
                continue
            async with self.db.begin() as conn:
                await store.set_matrix_room(conn, row.id, matrix_room, alias)
                await store.start_cursor(conn, row.id, self.backfill)
            self.outbound.rooms[row.id] = matrix_room
            self.outbound.wake(row.id)
            if row.matrix_room_id is None:
                await self.city.changed(row.id)
            log.info("city room %s is bridged to %s (%s)", row.slug, alias, matrix_room)

    async def _matrix_room(self, row: Any, alias: str) -> str | None:
        found = await self.client.room_of_alias(alias)
        if found is None:
            return await self._create(row, alias)
        try:
            await self.client.join(found)
            state = await self.client.room_state(found)
        except MatrixError as exc:
            log.error("%s exists and the bot cannot join it or read it: %s", alias, exc.detail)
            return None
        level = bot_level(state, self.bot_id)
        if level >= ADMIN_LEVEL:
            return found
        log.error(
            "%s exists and the bot's power level there is %s, not 100: not bridged", alias, level
        )
        return None

    async def _create(self, row: Any, alias: str) -> str | None:
        body: dict[str, Any] = {
            "room_alias_name": alias_localpart(row.slug),
            "name": row.name,
            "topic": row.description,
            "preset": "public_chat",
            "visibility": "public",
            "initial_state": [
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "world_readable"},
                }
            ],
        }
        for attempt in range(2):
            try:
                return await self.client.create_room(**body)
            except MatrixError as exc:
                if exc.errcode == "M_ROOM_IN_USE":  # another instance made it just now
                    return await self.client.room_of_alias(alias)
                if exc.errcode != "M_FORBIDDEN" or attempt:
                    raise
                # The homeserver does not let the bot list rooms in its directory
                # (room_list_publication_rules): the room is made unlisted, still public.
                log.warning("%s is made unlisted: %s", alias, exc.detail)
                body.pop("visibility")
        return None

    # --- sending: one instance at a time ---------------------------------------------------------
    async def _send(self) -> None:
        if self.db.is_sqlite:
            await self.outbound.run()
            return
        while True:
            with contextlib.suppress(Exception):
                async with self.db.autocommit() as conn:
                    lock = sa.text("SELECT pg_try_advisory_lock(:key)")
                    if (await conn.execute(lock, {"key": LEADER_LOCK})).scalar():
                        try:
                            await self.outbound.run()
                        finally:  # a pooled connection would keep the lock
                            unlock = sa.text("SELECT pg_advisory_unlock(:key)")
                            await conn.execute(unlock, {"key": LEADER_LOCK})
            await asyncio.sleep(5.0)

    async def _reject(self, matrix_room: str, event_id: str) -> None:
        """The bot redacts an event the city refused (in the background: never holds up the
        transaction's answer)."""
        txn = "reject." + hashlib.sha256(event_id.encode()).hexdigest()[:32]

        async def redact() -> None:
            try:
                await self.client.redact(
                    matrix_room, event_id, txn, reason="not accepted by the city's rules"
                )
            except (HomeserverUnavailable, MatrixError) as exc:
                log.warning("the refused event %s was not redacted: %s", event_id, exc.detail)

        self._tasks.spawn(redact(), name="matrix-reject")
