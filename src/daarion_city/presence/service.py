"""Presence policy: events from sockets and HTTP go through the store; changes are announced once.

Announcement: the instance whose store call returned a change (``old != new``) publishes one
``presence.update`` frame on the bus channel ``city:presence`` (every instance relays it to its
presence sockets) and to its publishers (rooms: each room the user has a socket in), again once
the bus is back if that failed. A heartbeat that changes nothing announces nothing.

Refresh coalescing: a heartbeat that reports what its connection last reported, sooner than
``refresh_window`` (a quarter of ``PRESENCE_TTL``, at most half the recommended heartbeat
interval) after that connection's last store write, is answered from memory: nothing to
announce, and no store call. Clients at the recommended interval always reach the store; a
client heartbeating faster costs one write per window (Synapse keeps ``last_active`` the same
way, with a 60 s granularity). The record's TTL then runs from the last write, so a user may
go offline up to one window before ``PRESENCE_TTL`` after their last heartbeat; any heartbeat
that changes the reported status is written; after a bus outage every live one is rewritten.

The sweeper runs on every instance every ``PRESENCE_SWEEP_INTERVAL`` seconds; the store hands
each expiry to exactly one of them, so a user whose instance died is announced offline once,
within ``PRESENCE_TTL + PRESENCE_SWEEP_INTERVAL``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from daarion_city.config import Settings
from daarion_city.core.clock import Clock, system_clock
from daarion_city.core.metrics import Metrics
from daarion_city.core.provided import Key
from daarion_city.core.snapshots import Snapshots
from daarion_city.core.tasks import TaskSet
from daarion_city.identity.principal import Principal
from daarion_city.presence.frames import bulk_frame, update_frame
from daarion_city.presence.model import HTTP_CONNECTION, Reported, Transition, reported_status
from daarion_city.presence.personal import PersonalEvents
from daarion_city.presence.reads import PresenceReads
from daarion_city.presence.store import PresenceStore
from daarion_city.pubsub import PubSub
from daarion_city.ratelimit import MemoryRateLimiter, RateLimiter
from daarion_city.realtime.caps import SocketCap
from daarion_city.realtime.connection import Connection
from daarion_city.realtime.transport import text_frame

log = logging.getLogger(__name__)

CHANNEL = "city:presence"
ChangeListener = Callable[[Transition], Awaitable[None]]
Publisher = Callable[[str, str], Awaitable[None]]  # (user_id, the presence.update frame)
_Written = tuple[Reported, float, Transition]  # a connection's last written heartbeat


class PresenceService:
    def __init__(
        self,
        *,
        store: PresenceStore,
        bus: PubSub,
        settings: Settings,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
        clock: Clock = system_clock,
        snapshots: Snapshots | None = None,
    ) -> None:
        self.store = store
        self.reads = PresenceReads(store, snapshots)
        self.personal = PersonalEvents(bus)
        self.limiter = limiter or MemoryRateLimiter(clock)
        self.bus = bus
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.sockets: set[Connection] = set()
        self.sockets_per_user = SocketCap(
            settings.presence_max_sockets_per_user, "presence sockets"
        )
        # The users' socket heartbeat buckets: in process, so a heartbeat takes no round trip.
        self._socket_writes = MemoryRateLimiter(clock)
        self.refresh_window = min(
            settings.presence_ttl / 4, settings.presence_heartbeat_interval / 2
        )
        self._refreshed: dict[tuple[str, str], _Written] = {}
        self._unannounced: dict[str, Transition] = {}
        self._snapshot_owed = False
        self._listeners: list[ChangeListener] = []
        self._publishers: list[Publisher] = []
        self._tasks = TaskSet("presence")

    def add_listener(self, listener: ChangeListener) -> None:
        """Called once per change, on the instance that made it (the Matrix bridge uses it)."""
        self._listeners.append(listener)

    def add_publisher(self, publisher: Publisher) -> None:
        """Part of announcing (the rooms use it): its failure leaves the change unannounced."""
        self._publishers.append(publisher)

    async def start(self) -> None:
        self.bus.add_reconnect_listener(self._after_bus_outage)
        await self.bus.subscribe(CHANNEL, self._on_bus)
        await self.personal.start()
        self._tasks.every(
            self.settings.presence_sweep_interval, self._sweep_and_count, name="presence-sweeper"
        )

    async def stop(self) -> None:
        await self._tasks.close()
        await self.bus.unsubscribe(CHANNEL, self._on_bus)
        await self.personal.stop()

    # --- events -------------------------------------------------------------------------------
    def socket_write_wait(self, user_id: str) -> float:
        """A socket heartbeat's token from the bucket of all the user's sockets here: 0.0, or
        the seconds to wait."""
        settings = self.settings
        return self._socket_writes.wait(
            user_id, rate=settings.presence_write_rate, burst=settings.presence_write_burst
        )

    async def check_write(self, user: Principal) -> None:
        """The user's presence-write bucket over HTTP (heartbeats and offline beacons), shared by
        the instances when Redis is configured. Raises ``RateLimited``."""
        await self.limiter.hit(
            f"presence:{user.user_id}",
            rate=self.settings.presence_write_rate,
            burst=self.settings.presence_write_burst,
        )

    async def heartbeat(
        self,
        user: Principal,
        conn_id: str,
        *,
        status: str | None = None,
        last_active_ago_ms: int | None = None,
    ) -> Transition:
        reported = reported_status(status, last_active_ago_ms, self.settings.presence_away_after)
        now = self.clock()
        key = (user.user_id, conn_id)
        last = self._refreshed.get(key)
        if last is not None and last[0] == reported and now - last[1] < self.refresh_window:
            t = last[2]
            self.metrics.presence_coalesced.inc()
            return Transition(t.user_id, t.name, t.new, t.new, t.last_seen)
        change = await self.store.refresh_ttl(
            user.user_id, user.name, conn_id, now=now, status=reported
        )
        self._refreshed[key] = (reported, now, change)
        await self._announce(change)
        return change

    async def _after_bus_outage(self) -> None:
        """The bus is back. The store may have lost records (a Redis restart keeps nothing): this
        instance's live connections are written again now, not at their next heartbeat. Updates
        published meanwhile were lost to its sockets: each gets a fresh ``presence.bulk_update``.
        Changes it could not announce are announced now."""
        self.reads.changed()
        live, self._refreshed = self._refreshed, {}
        await self._rewrite(live)
        self._snapshot_owed = True
        await self._send_owed_snapshot()
        await self._announce_pending()

    async def _rewrite(self, live: dict[tuple[str, str], _Written]) -> None:
        """Write ``live`` again with the statuses last reported: a socket as of now (it is open),
        an HTTP client as of its last written heartbeat. A store not answering yet leaves the rest
        to their next heartbeats (none is coalesced: they are no longer in ``_refreshed``)."""
        now = self.clock()
        for (user_id, conn_id), (reported, at, last) in live.items():
            when = at if conn_id == HTTP_CONNECTION else now
            try:
                change = await self.store.refresh_ttl(
                    user_id, last.name, conn_id, now=when, status=reported
                )
            except Exception:
                log.warning("rewriting presence after a bus outage failed; heartbeats will")
                return
            self._refreshed[user_id, conn_id] = (reported, when, change)
            await self._announce(change)

    async def _send_owed_snapshot(self) -> None:
        """Send the snapshot owed since a bus outage to every presence socket; if the store does
        not answer yet, it stays owed and the next sweep tries again."""
        if not self._snapshot_owed:
            return
        if self.sockets:
            try:
                users = await self.store.get_all_online()
            except Exception:
                log.warning("presence snapshot after a bus outage failed; retried at a sweep")
                return
            bulk = bulk_frame(users)
            for conn in list(self.sockets):
                conn.send_event(bulk)
        self._snapshot_owed = False

    async def _announce_pending(self) -> None:
        """Announce, with each user's state by now, the changes whose announcement failed (on
        bus reconnect and at every sweep, so a failure after the reconnect is caught too)."""
        pending, self._unannounced = self._unannounced, {}
        if not pending:
            return
        try:
            current = await self.store.get(list(pending))
        except Exception:
            self._unannounced = {**pending, **self._unannounced}
            return
        for user_id, old in pending.items():
            now = current.get(user_id)
            status = now.new if now is not None else "offline"
            name, seen = (now.name, now.last_seen) if now is not None else (old.name, old.last_seen)
            await self._publish(Transition(user_id, name, status, status, seen))

    async def disconnect(self, user: Principal, conn_id: str) -> Transition:
        self._refreshed.pop((user.user_id, conn_id), None)
        change = await self.store.disconnect(user.user_id, conn_id, now=self.clock())
        await self._announce(change)
        return change

    async def offline(self, user: Principal, conn_id: str | None = None) -> Transition:
        """``POST /city/presence/offline``: the HTTP client (and the named socket) are gone."""
        self._refreshed.pop((user.user_id, HTTP_CONNECTION), None)
        if conn_id:
            self._refreshed.pop((user.user_id, conn_id), None)
        change = await self.store.disconnect(user.user_id, HTTP_CONNECTION, now=self.clock())
        if conn_id and conn_id != HTTP_CONNECTION:
            then = await self.store.disconnect(user.user_id, conn_id, now=self.clock())
            change = Transition(then.user_id, then.name, change.old, then.new, then.last_seen)
        await self._announce(change)
        return change

    async def sweep(self) -> list[Transition]:
        changes = await self.store.sweep(now=self.clock())
        for change in changes:
            await self._announce(change)
        return changes

    async def _sweep_and_count(self) -> None:
        # Past the window an entry only tells what a connection last reported: kept for sockets
        # (popped when they close), dropped for HTTP clients (they may be gone without a word).
        cutoff = self.clock() - self.refresh_window
        self._refreshed = {
            k: v for k, v in self._refreshed.items() if v[1] >= cutoff or k[1] != HTTP_CONNECTION
        }
        await self._send_owed_snapshot()
        await self._announce_pending()
        await self.sweep()
        self.metrics.online_users.set(await self.store.get_online_count())

    async def _announce(self, change: Transition) -> None:
        if not change.changed:
            return
        await self._publish(change)
        for listener in self._listeners:
            try:
                await listener(change)
            except Exception:
                log.warning("presence listener failed", exc_info=True)

    async def _publish(self, change: Transition) -> None:
        self.reads.changed()
        frame = update_frame(change)
        try:
            await self.bus.publish(CHANNEL, frame.encode())
            for publisher in self._publishers:
                await publisher(change.user_id, frame)
        except Exception:
            # Announced again, with the user's state by then, once the bus is back.
            self._unannounced[change.user_id] = change
            log.warning("could not announce presence of %s", change.user_id, exc_info=True)

    def _on_bus(self, data: bytes) -> None:
        self.reads.changed()
        frame = data.decode()
        wire = text_frame(data) if len(self.sockets) > 1 else None
        for conn in self.sockets:
            conn.send_event(frame, wire)

    # --- sockets ------------------------------------------------------------------------------
    async def open_socket(self, conn: Connection, conn_id: str) -> None:
        """Count the socket as a heartbeat, then send ``presence.bulk_update`` followed by every
        update published since the socket registered (each is a whole state, so replaying them
        after the snapshot ends on the latest state); the user's personal events likewise
        (``unread.bulk``, then what changed since)."""
        self.sockets.add(conn)  # catching up: updates are held until the snapshot is queued
        await self.heartbeat(conn.user, conn_id)
        conn.send_snapshot(bulk_frame(await self.store.get_all_online(), conn_id))
        await self.personal.open(conn)
        conn.go_live()

    async def close_socket(self, conn: Connection, conn_id: str, *, clean: bool) -> None:
        self.sockets.discard(conn)
        self.personal.close(conn)
        self._refreshed.pop((conn.user.user_id, conn_id), None)
        if clean:
            await self.disconnect(conn.user, conn_id)
        # Dropped without a close frame: missed heartbeats, so a quick reconnect does not flap.


PRESENCE: Key[PresenceService] = Key("presence")
