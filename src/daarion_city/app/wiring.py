"""The wiring: the settings checked, and every shared resource built from them.

``open_resources`` builds each pluggable family with its ``create_*`` factory (in process
without ``REDIS_URL``, shared in Redis with it) and the services on top; the resources are
torn down in reverse order.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from daarion_city.app.bridging import BridgedRooms
from daarion_city.app.yourdata import your_data
from daarion_city.config import SETTINGS, Settings
from daarion_city.core.metrics import METRICS, Metrics
from daarion_city.core.provided import INSTANCE_ID, Provided
from daarion_city.core.redisutil import open_redis
from daarion_city.core.snapshots import Snapshots
from daarion_city.core.validation import SLUG_PATTERN, is_slug
from daarion_city.feed.service import FEED, FeedService
from daarion_city.feed.webhookproc import WebhookProcess
from daarion_city.feed.webhooks import WebhookSender
from daarion_city.identity.known import KnownUsers
from daarion_city.identity.retirements import Retirements
from daarion_city.identity.suspensions import SUSPENSIONS, Suspensions
from daarion_city.identity.tokens import AUTH, TokenAuthority, load_secret
from daarion_city.identity.yourdata import YOURDATA, YourData
from daarion_city.matrix.service import MATRIX, MatrixGateway
from daarion_city.presence.service import CHANNEL as PRESENCE_CHANNEL
from daarion_city.presence.service import PRESENCE, PresenceService
from daarion_city.presence.store import create_presence_store
from daarion_city.pubsub import BUS, PubSub, create_pubsub
from daarion_city.ratelimit import LIMITER, RateLimiter, create_rate_limiter
from daarion_city.realtime.hub import HUB, RoomHub
from daarion_city.realtime.transport import DirectWriter
from daarion_city.rooms.occupancy import create_occupancy
from daarion_city.rooms.service import ROOMS, RoomService, load_frames, load_last_seq
from daarion_city.secondme.providers import create_provider, describe, in_effect
from daarion_city.secondme.service import SECONDME, SecondMeService
from daarion_city.storage.database import DB, Database
from daarion_city.storage.migrate import migrate

log = logging.getLogger(__name__)


@dataclass
class Resources:
    """What one process built: the app's own record of it (its teardown, the tests' handle).
    Routes and socket handlers never see it: they ask for one object at a time by key
    (:meth:`provided`, ``core/provided.py``)."""

    settings: Settings
    auth: TokenAuthority
    metrics: Metrics
    db: Database
    bus: PubSub
    limiter: RateLimiter
    hub: RoomHub
    feed: FeedService
    rooms: RoomService
    presence: PresenceService
    secondme: SecondMeService
    matrix: MatrixGateway | None
    instance_id: str
    suspensions: Suspensions
    yourdata: YourData
    services: frozenset[str] = field(default_factory=frozenset)
    webhooks: WebhookSender | WebhookProcess | None = None

    def provided(self) -> Provided:
        return Provided(
            {
                SETTINGS: self.settings,
                AUTH: self.auth,
                METRICS: self.metrics,
                DB: self.db,
                BUS: self.bus,
                LIMITER: self.limiter,
                HUB: self.hub,
                FEED: self.feed,
                ROOMS: self.rooms,
                PRESENCE: self.presence,
                SECONDME: self.secondme,
                MATRIX: self.matrix,
                INSTANCE_ID: self.instance_id,
                SUSPENSIONS: self.suspensions,
                YOURDATA: self.yourdata,
            }
        )


class ConfigurationError(RuntimeError):
    """The settings cannot work together; raised at start-up, before serving."""


def check_settings(settings: Settings) -> None:
    bad_slugs = [s for s in settings.default_room_slugs if not is_slug(s)]
    if bad_slugs:
        raise ConfigurationError(
            f"CITY_DEFAULT_ROOMS: {', '.join(map(repr, bad_slugs))} must match {SLUG_PATTERN}"
        )
    if bool(settings.city_webhook_url) != bool(settings.city_webhook_secret):
        raise ConfigurationError("CITY_WEBHOOK_URL and CITY_WEBHOOK_SECRET go together")
    if settings.webhooks_on and not settings.city_webhook_url.startswith(("http://", "https://")):
        raise ConfigurationError("CITY_WEBHOOK_URL must be an http:// or https:// URL")
    if settings.city_webhook_sender == "process" and settings.is_sqlite:
        raise ConfigurationError(
            "CITY_WEBHOOK_SENDER=process needs PostgreSQL (SQLite's writer is one process)"
        )
    if settings.city_instances > 1:
        if not settings.redis_url:
            raise ConfigurationError(
                f"CITY_INSTANCES={settings.city_instances} needs REDIS_URL: in-memory fan-out "
                "and presence only reach the sockets of one process"
            )
        if settings.is_sqlite:
            raise ConfigurationError(
                f"CITY_INSTANCES={settings.city_instances} needs a shared PostgreSQL DATABASE_URL"
            )


@asynccontextmanager
async def open_resources(
    settings: Settings, services: frozenset[str], metrics: Metrics
) -> AsyncIterator[Resources]:
    """Build every shared resource; tear them down in reverse order."""
    check_settings(settings)
    instance_id = settings.city_instance_id or (
        f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    prefix, ttl = settings.city_redis_prefix, settings.presence_ttl

    def snapshots(read: str) -> Snapshots:
        """The snapshots of a public read (``core/snapshots.py``), as configured."""
        return Snapshots(
            read,
            capacity=settings.city_read_snapshots,
            max_age=settings.city_read_snapshot_max_age,
            metrics=metrics,
        )

    async with AsyncExitStack() as stack:
        db = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout,
        )
        stack.push_async_callback(db.dispose)
        await migrate(db)
        known = KnownUsers(db)
        stack.push_async_callback(known.close)
        bus = create_pubsub(settings.redis_url, prefix)
        await bus.start()
        stack.push_async_callback(bus.stop)
        suspensions = Suspensions(db, bus, admins=settings.admins)
        await suspensions.start()
        stack.push_async_callback(suspensions.stop)
        retirements = Retirements(db, bus)
        await retirements.start()
        stack.push_async_callback(retirements.stop)
        redis = await stack.enter_async_context(
            open_redis(
                settings.redis_url,
                pool_size=settings.redis_pool_size,
                wait=settings.database_timeout,
            )
        )
        feed = FeedService(db, bus, pages=snapshots("feed"), outbox=settings.webhooks_on)
        await feed.start()
        stack.push_async_callback(feed.stop)
        webhooks: WebhookSender | WebhookProcess | None = None
        if settings.webhooks_on and "city" in services:  # the outbox's sender (one per cluster)
            if settings.webhook_process:
                webhooks = WebhookProcess(settings, metrics)
            else:
                webhooks = WebhookSender(db, settings, metrics.count_webhook)
            feed.add_listener(webhooks.wake)
            await webhooks.start()
            stack.push_async_callback(webhooks.stop)
        hub = RoomHub(
            bus,
            load_frames=functools.partial(load_frames, db),
            load_last_seq=functools.partial(load_last_seq, db),
        )
        hub.start()
        stack.push_async_callback(hub.close)
        limiter = create_rate_limiter(redis, prefix=prefix)
        stack.push_async_callback(limiter.close)
        occupancy = create_occupancy(
            redis,
            instance_id=instance_id,
            ttl=ttl,
            prefix=prefix,
            large_room=settings.city_large_room,
        )
        presence_store = create_presence_store(redis, ttl=ttl, prefix=prefix)
        stack.push_async_callback(occupancy.close)
        presence = PresenceService(
            store=presence_store,
            bus=bus,
            settings=settings,
            metrics=metrics,
            limiter=limiter,
            snapshots=snapshots("presence"),
        )
        rooms = RoomService(
            db=db,
            hub=hub,
            occupancy=occupancy,
            feed=feed,
            limiter=limiter,
            settings=settings,
            metrics=metrics,
            instance_id=instance_id,
            snapshots=snapshots,
            status_of=presence.reads.statuses,
            personal=presence.personal,
            known=known,
        )
        presence.personal.opening = rooms.unread.bulk_frame
        suspensions.expellers += [rooms.sockets.expel_user, presence.personal.expel_user]
        retirements.expellers += [rooms.sockets.expel_user, presence.personal.expel_user]
        stack.push_async_callback(rooms.stop)
        presence.add_publisher(rooms.reads.presence_changed)
        presence.add_publisher(rooms.sockets.publish_presence)

        async def gauges(metrics: Metrics) -> None:
            metrics.deliveries.set(hub.delivered)
            metrics.direct_writes.set(DirectWriter.writes)
            metrics.online_users.set(await presence.store.get_online_count())

        metrics.add_collector(gauges)
        if "city" in services:
            await rooms.ensure_default_rooms()
            await rooms.start()
            # A room detail shows its online members' statuses: any presence update may change it.
            await bus.subscribe(PRESENCE_CHANNEL, rooms.reads.on_presence)
            await presence.start()
            stack.push_async_callback(presence.stop)
        secondme = SecondMeService(
            db,
            create_provider(settings),
            settings,
            limiter,
            catchup_source=rooms.unread.since_marker,
        )
        if "secondme" in services:  # says what to run when the embedded model is missing
            log.log(logging.WARNING if in_effect(settings)[2] else logging.INFO, describe(settings))
        stack.push_async_callback(secondme.close)
        yourdata = your_data(settings, db, retirements, limiter, rooms, presence)
        yourdata.start()
        stack.push_async_callback(yourdata.close)
        matrix = MatrixGateway.create(settings, db, BridgedRooms(rooms))
        if matrix is not None:
            await matrix.start()
            stack.push_async_callback(matrix.stop)
            if matrix.bridge is not None:
                presence.add_listener(matrix.bridge.on_change)
            if matrix.rooms is not None:
                rooms.listeners.append(matrix.rooms.committed)
        yield Resources(
            settings=settings,
            auth=TokenAuthority(
                load_secret(settings),
                on_new=known.note,
                admins=settings.admins,
                suspended=suspensions.check,
                retired=retirements.is_retired,
            ),
            suspensions=suspensions,
            yourdata=yourdata,
            metrics=metrics,
            db=db,
            bus=bus,
            limiter=limiter,
            hub=hub,
            feed=feed,
            rooms=rooms,
            presence=presence,
            secondme=secondme,
            matrix=matrix,
            instance_id=instance_id,
            services=services,
            webhooks=webhooks,
        )
