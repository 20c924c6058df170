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

from daarion_city import auth
from daarion_city.config import Settings
from daarion_city.feed.service import FeedService
from daarion_city.matrix.service import MatrixGateway
from daarion_city.metrics import Metrics
from daarion_city.presence.service import PresenceService
from daarion_city.presence.store import create_presence_store
from daarion_city.pubsub import create_pubsub
from daarion_city.ratelimit import create_rate_limiter
from daarion_city.realtime.hub import RoomHub
from daarion_city.redisutil import open_redis
from daarion_city.resources import Resources
from daarion_city.rooms.occupancy import create_occupancy
from daarion_city.rooms.service import RoomService, load_frames, load_last_seq
from daarion_city.secondme.providers import create_provider, describe, in_effect
from daarion_city.secondme.service import SecondMeService
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate
from daarion_city.validation import SLUG_PATTERN, is_slug

log = logging.getLogger(__name__)


class ConfigurationError(RuntimeError):
    """The settings cannot work together; raised at start-up, before serving."""


def check_settings(settings: Settings) -> None:
    bad_slugs = [s for s in settings.default_room_slugs if not is_slug(s)]
    if bad_slugs:
        raise ConfigurationError(
            f"CITY_DEFAULT_ROOMS: {', '.join(map(repr, bad_slugs))} must match {SLUG_PATTERN}"
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
    async with AsyncExitStack() as stack:
        db = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout,
        )
        stack.push_async_callback(db.dispose)
        await migrate(db)
        bus = create_pubsub(settings.redis_url, prefix)
        await bus.start()
        stack.push_async_callback(bus.stop)
        redis = await stack.enter_async_context(open_redis(settings))
        feed = FeedService(db, bus)
        await feed.start()
        stack.push_async_callback(feed.stop)
        hub = RoomHub(
            bus,
            load_frames=functools.partial(load_frames, db),
            load_last_seq=functools.partial(load_last_seq, db),
        )
        hub.start()
        stack.push_async_callback(hub.close)
        limiter = create_rate_limiter(redis, prefix=prefix)
        stack.push_async_callback(limiter.close)
        occupancy = create_occupancy(redis, instance_id=instance_id, ttl=ttl, prefix=prefix)
        presence_store = create_presence_store(redis, ttl=ttl, prefix=prefix)
        stack.push_async_callback(occupancy.close)
        presence = PresenceService(
            store=presence_store,
            bus=bus,
            settings=settings,
            metrics=metrics,
            limiter=limiter,
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
            status_of=presence.statuses,
        )
        stack.push_async_callback(rooms.stop)
        presence.add_publisher(rooms.sockets.publish_presence)
        if "city" in services:
            await rooms.ensure_default_rooms()
            await rooms.start()
            await presence.start()
            stack.push_async_callback(presence.stop)
        secondme = SecondMeService(db, create_provider(settings), settings, limiter)
        if "secondme" in services:  # says what to run when the embedded model is missing
            log.log(logging.WARNING if in_effect(settings)[2] else logging.INFO, describe(settings))
        stack.push_async_callback(secondme.close)
        matrix = MatrixGateway.create(settings)
        if matrix is not None:
            await matrix.start()
            stack.push_async_callback(matrix.stop)
            if matrix.bridge is not None:
                presence.add_listener(matrix.bridge.on_change)
        yield Resources(
            settings=settings,
            auth=auth.TokenAuthority(auth.load_secret(settings)),
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
        )
