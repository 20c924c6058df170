"""The application factory: the routers and the HTTP front of every service.

``create_app(settings, services=...)`` builds the shared resources once in the lifespan (with
``wiring.open_resources``) and includes only the routers asked for, so one codebase runs as one
process or as several.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from daarion_city.app import asyncapi
from daarion_city.app.wiring import ConfigurationError, check_settings, open_resources
from daarion_city.config import ALL_SERVICES, Settings
from daarion_city.core.errors import install_error_handlers
from daarion_city.core.metrics import Metrics
from daarion_city.edge.front import front
from daarion_city.feed import http as feed_http
from daarion_city.identity import admin as identity_admin
from daarion_city.identity import http as identity_http
from daarion_city.matrix import http as matrix_http
from daarion_city.ops import http as ops_http
from daarion_city.presence import http as presence_http
from daarion_city.presence import ws as presence_ws
from daarion_city.rooms import http as rooms_http
from daarion_city.rooms import modhttp as rooms_modhttp
from daarion_city.rooms import searchhttp as rooms_searchhttp
from daarion_city.rooms import ws as rooms_ws
from daarion_city.secondme import http as secondme_http
from daarion_city.web import STATIC_DIR

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(
    settings: Settings, services: Iterable[str] | None = None, *, lanes: bool = True
) -> FastAPI:
    """The app; what a server serves is ``app.state.lane``: the sockets' and the post lane in
    front of the HTTP middleware in front of FastAPI (``lanes=False``: the middleware and
    FastAPI only, every request through its router, as the tests compare)."""
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
            app.state.provided = resources.provided()
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
    app.include_router(ops_http.router)
    app.include_router(identity_http.router)
    app.include_router(identity_admin.router)
    if "city" in enabled:
        app.include_router(rooms_http.router)
        app.include_router(rooms_http.me_router)
        app.include_router(rooms_modhttp.router)
        app.include_router(rooms_modhttp.reports_router)
        app.include_router(rooms_searchhttp.router)
        app.include_router(rooms_ws.router)
        app.include_router(feed_http.router)
        app.include_router(presence_http.router)
        app.include_router(presence_ws.router)
        app.include_router(asyncapi.router)
    if "secondme" in enabled:
        app.include_router(secondme_http.router)
    if "matrix" in enabled:
        app.include_router(matrix_http.router)
    app.state.lane = front(app, settings, metrics, lanes=lanes and "city" in enabled)
    if "city" in enabled:
        # Mounted last, so every API route above wins over a file of the same path.
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app
