"""The HTTP server: uvicorn with the service's options, and a graceful shutdown of our own.

On SIGTERM (or SIGINT) uvicorn stops accepting, asks every connection to shut down (its
WebSocket close code would be 1012), waits up to ``timeout_graceful_shutdown`` for requests in
flight, then runs the lifespan shutdown. :class:`CityServer` goes first: it stops accepting,
ends the feed's SSE streams (clients resume with ``Last-Event-ID``), and closes every room and
presence socket with 1001 "going away" after flushing what each had queued, so clients
reconnect at once, to this instance's successor or to another one. Presence is not taken
offline for sockets closed this way: their users are back within a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from daarion_city.config import Settings
from daarion_city.core.collector import FullCollections
from daarion_city.core.provided import Provided
from daarion_city.edge.head import HeadLimits, protocol_class
from daarion_city.edge.headers import SECURITY_HEADERS
from daarion_city.edge.protocol import CityWebSocketProtocol
from daarion_city.feed.service import FEED
from daarion_city.presence.service import PRESENCE
from daarion_city.realtime.hub import HUB

log = logging.getLogger(__name__)
GOING_AWAY_TIMEOUT = 5.0


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """One place for the options every server of this app runs with."""
    options: dict[str, Any] = {
        "host": settings.city_host,
        "port": settings.city_port,
        # uvicorn's websockets-sansio protocol, lighter per socket (edge/protocol.py).
        "ws": CityWebSocketProtocol,
        "ws_max_size": settings.city_ws_max_frame_bytes,
        # permessage-deflate keeps a compressor per socket (about 64 KiB with zlib's defaults):
        # off, as measured in bench/RESULTS.md; chat frames are small.
        "ws_per_message_deflate": False,
        # httptools, with caps on the request head's size, header count and time (edge/head.py).
        "http": protocol_class(
            HeadLimits(
                max_bytes=settings.city_max_header_bytes,
                max_headers=settings.city_max_headers,
                timeout=settings.city_header_timeout,
            )
        ),
        # Sent with every answer, built once (edge/headers.py).
        "headers": SECURITY_HEADERS,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": settings.city_shutdown_timeout,
        "server_header": False,
        "lifespan": "on",
    }
    options.update(overrides)
    # app.state.lane: the lanes in front of the app (edge/front.py).
    return uvicorn.Config(getattr(app.state, "lane", app), **options)


async def going_away(values: Provided) -> None:
    """Close every socket with 1001 and end every SSE stream; bounded in time."""
    values[FEED].end_streams()
    conns = [*values[HUB].all_connections(), *values[PRESENCE].sockets]
    if not conns:
        return
    log.info("shutting down: closing %d sockets with 1001", len(conns))
    tasks = [conn.go_away() for conn in conns]
    _, pending = await asyncio.wait(tasks, timeout=GOING_AWAY_TIMEOUT)
    for task in pending:
        task.cancel()


class CityServer(uvicorn.Server):
    """uvicorn's server with the shutdown above, and the full garbage collections on its loop
    when given ``collections`` (``core/collector.py``)."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, *, collections: FullCollections | None = None
    ) -> None:
        super().__init__(config)
        self._city_app = app
        self._collections = collections
        self._collecting: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._collections is not None:
            self._collections.take_over()
            self._collecting = asyncio.create_task(self._collections.run(), name="full-gc")
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting before the sockets are told to go
        values: Provided | None = getattr(self._city_app.state, "provided", None)
        if values is not None:
            try:
                await going_away(values)
            except Exception:
                log.exception("closing sockets for the shutdown failed")
        await super().shutdown(sockets)
        if self._collecting is not None:
            self._collecting.cancel()
            self._collecting = None
        if self._collections is not None:
            self._collections.give_back()
