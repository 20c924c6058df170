"""What the server calls for every connection (``app.state.lane``): the socket lane, then the HTTP
middleware in front of FastAPI rather than inside it (request ids, limits, metrics and the access
log, outermost), CORS, then the post lane, then FastAPI itself."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from daarion_city.config import Settings
from daarion_city.core.metrics import Metrics
from daarion_city.edge.lanes import PostLane, SocketLane
from daarion_city.edge.middleware import RequestContextMiddleware
from daarion_city.presence import ws as presence_ws
from daarion_city.rooms import ws as rooms_ws


def front(app: FastAPI, settings: Settings, metrics: Metrics, *, lanes: bool) -> ASGIApp:
    """The sockets' and the post lane (``lanes``) in front of the HTTP middleware in front of
    FastAPI; without ``lanes``, the middleware and FastAPI only, every request through its
    router (as the tests compare)."""
    http = front_http(app, settings, metrics, post_lane=lanes)
    if not lanes:
        return http
    # What the server calls first: the room and presence sockets skip the HTTP stack.
    return SocketLane(
        app, http=http, room=rooms_ws.room_socket, presence=presence_ws.presence_socket
    )


def front_http(app: FastAPI, settings: Settings, metrics: Metrics, *, post_lane: bool) -> ASGIApp:
    """The HTTP middleware, in front of FastAPI rather than inside it: request ids, limits,
    metrics and the access log (outermost), CORS, then the post lane. FastAPI's own stack
    (its error middleware, exception handlers, router) is what a request reaches only when
    the lanes leave it to the app: a post the lane serves passes through five fewer
    coroutine layers (bench/RESULTS.md, seventh session)."""
    http: ASGIApp = app
    if post_lane:
        http = PostLane(app)
    if settings.allowed_origins:
        # Bearer tokens, never cookies: no credentials, so "*" stays safe to allow.
        # The same list decides which origins may open sockets (realtime/origins.py).
        http = CORSMiddleware(
            http,
            allow_origins=settings.allowed_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    return RequestContextMiddleware(
        http,
        metrics=metrics,
        max_body=settings.city_max_body_bytes,
        json_limits=settings.json_limits,
    )
