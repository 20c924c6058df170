"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from daarion_city.core.provided import Key

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]
log = logging.getLogger(__name__)
Collector = Callable[["Metrics"], Awaitable[None]]


class Metrics:
    """The app's metric families. Gauges that are read rather than counted (the online count,
    deliveries since start) are set by collectors the app adds, run before each scrape."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "city_http_requests", "HTTP requests answered", ["method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "city_http_request_seconds",
            "HTTP request latency",
            ["method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.room_sockets = Gauge("city_room_sockets", "Open room WebSockets", registry=r)
        self.presence_sockets = Gauge(
            "city_presence_sockets", "Open presence WebSockets", registry=r
        )
        self.messages = Counter("city_messages", "Room messages committed", registry=r)
        self.unread_pushes = Counter(
            "city_unread_pushes", "unread.update events pushed for new messages", registry=r
        )
        self.commit_rooms = Counter(
            "city_message_commit_rooms",
            "Room batches committed together with other rooms' (several) or alone (one), "
            "by the group commit (one statement on PostgreSQL, one transaction on SQLite)",
            ["shared"],
            registry=r,
        )
        self.deliveries = Gauge(
            "city_deliveries", "Room message frames queued to sockets (since start)", registry=r
        )
        self.direct_writes = Gauge(
            "city_direct_writes",
            "Room message frames written straight to transports (since start)",
            registry=r,
        )
        self.ws_errors = Counter(
            "city_ws_errors", "Error events sent on WebSockets", ["code"], registry=r
        )
        self.online_users = Gauge("city_presence_online", "Users online or away", registry=r)
        self.presence_coalesced = Counter(
            "city_presence_heartbeats_coalesced",
            "Heartbeats answered from memory (nothing changed since the connection's last write)",
            registry=r,
        )
        self.read_snapshots = Counter(
            "city_read_snapshots",
            "Public reads answered from a snapshot in memory (hit) and the loads that made one "
            "(load), by read",
            ["read", "result"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "city_webhook_deliveries",
            "Webhook attempts of feed events: delivered (a 2xx), failed (anything else, retried) "
            "and dropped (given up after CITY_WEBHOOK_RETRY_HOURS)",
            ["result"],
            registry=r,
        )

    def count_webhook(self, result: str, n: int = 1) -> None:
        self.webhook_deliveries.labels(result).inc(n)

    def add_collector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    async def collect(self) -> None:
        """Run the collectors; one that fails (its store is away) leaves its last value."""
        for collector in self._collectors:
            try:
                await collector(self)
            except Exception:
                log.warning("a metrics collector failed", exc_info=True)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS: Key[Metrics] = Key("metrics")
