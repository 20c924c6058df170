"""The application factory: the only module that knows every service.

``create_app(settings, services=...)`` builds the shared resources once in the lifespan and
includes only the routers asked for, so one codebase runs as one process or as several.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from daarion_city import auth, ops
from daarion_city.config import ALL_SERVICES, Settings
from daarion_city.edge.front import front
from daarion_city.errors import install_error_handlers
from daarion_city.feed import http as feed_http
from daarion_city.feed.service import FeedService
from daarion_city.matrix import http as matrix_http
from daarion_city.matrix.service import MatrixGateway
from daarion_city.metrics import Metrics
from daarion_city.presence import http as presence_http
from daarion_city.presence import ws as presence_ws
from daarion_city.presence.service import PresenceService
from daarion_city.presence.store import MemoryPresenceStore, PresenceStore
from daarion_city.presence.store.redis import RedisPresenceStore
from daarion_city.pubsub import create_pubsub
from daarion_city.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from daarion_city.realtime.hub import RoomHub
from daarion_city.resources import Resources
from daarion_city.rooms import http as rooms_http
from daarion_city.rooms import ws as rooms_ws
from daarion_city.rooms.occupancy import MemoryRoomOccupancy, RoomOccupancy
from daarion_city.rooms.occupancy_redis import RedisRoomOccupancy
from daarion_city.rooms.service import RoomService, load_frames, load_last_seq
from daarion_city.secondme import http as secondme_http
from daarion_city.secondme.providers import create_provider, describe, in_effect
from daarion_city.secondme.service import SecondMeService
from daarion_city.storage.database import Database
from daarion_city.storage.migrate import migrate
from daarion_city.validation import SLUG_PATTERN, is_slug
from daarion_city.web import STATIC_DIR

log = logging.getLogger(__name__)
VERSION = "0.1.0"


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
    async with AsyncExitStack() as stack:
        db = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout,
        )
        stack.push_async_callback(db.dispose)
        await migrate(db)
        bus = create_pubsub(settings.redis_url, settings.city_redis_prefix)
        await bus.start()
        stack.push_async_callback(bus.stop)
        redis_client = None
        if settings.redis_url:
            # A blocking pool: more concurrent calls than connections wait for one (bounded by
            # the timeout) instead of failing at once with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=settings.redis_pool_size,
                timeout=settings.database_timeout,
                socket_timeout=settings.database_timeout,
                socket_connect_timeout=settings.database_timeout,
            )
            redis_client = aioredis.Redis(connection_pool=pool)
            stack.push_async_callback(redis_client.aclose)
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
        limiter: RateLimiter = MemoryRateLimiter()
        if redis_client is not None:
            limiter = RedisRateLimiter(redis_client, prefix=settings.city_redis_prefix)
        stack.push_async_callback(limiter.close)
        occupancy: RoomOccupancy
        presence_store: PresenceStore
        if redis_client is not None:
            prefix = settings.city_redis_prefix
            occupancy = RedisRoomOccupancy(
                redis_client, instance_id=instance_id, ttl=settings.presence_ttl, prefix=prefix
            )
            presence_store = RedisPresenceStore(
                redis_client, ttl=settings.presence_ttl, prefix=prefix
            )
        else:
            occupancy = MemoryRoomOccupancy()
            presence_store = MemoryPresenceStore(settings.presence_ttl)
        stack.push_async_callback(occupancy.close)
        presence = PresenceService(
            store=presence_store,
            bus=bus,
            hub=hub,
            rooms_of=occupancy.rooms_of,
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


def create_app(
    settings: Settings, services: Iterable[str] | None = None, *, lanes: bool = True
) -> FastAPI:
    """The app; what a server serves is ``app.state.lane`` (``edge/front.py``): the sockets' and
    the post lane in front of the HTTP middleware in front of FastAPI (``lanes=False``: the
    middleware and FastAPI only, every request through its router, as the tests compare)."""
    enabled = frozenset(services or ALL_SERVICES)
    unknown = enabled - set(ALL_SERVICES)
    if unknown:
        raise ConfigurationError(f"unknown services {sorted(unknown)}; known: {ALL_SERVICES}")
    check_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, enabled, metrics) as resources:
            app.state.resources = resources
            log.info("serving %s as instance %s", ",".join(sorted(enabled)), resources.instance_id)
            yield

    app = FastAPI(
        title="DAARION City",
        version=VERSION,
        description="Public rooms with live chat, presence, the city feed, Second Me and Matrix.",
        lifespan=lifespan,
        # FastAPI looks up the global OpenTelemetry providers (environment reads included) on
        # every request unless its telemetry is off; /metrics and the access log are ours.
        telemetry=None
        if settings.city_opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(auth.router)
    if "city" in enabled:
        app.include_router(rooms_http.router)
        app.include_router(rooms_ws.router)
        app.include_router(feed_http.router)
        app.include_router(presence_http.router)
        app.include_router(presence_ws.router)
    if "secondme" in enabled:
        app.include_router(secondme_http.router)
    if "matrix" in enabled:
        app.include_router(matrix_http.router)
    app.state.lane = front(app, settings, metrics, lanes=lanes and "city" in enabled)
    if "city" in enabled:
        # Mounted last, so every API route above wins over a file of the same path.
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app
