"""The shared resources of one process, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from daarion_city.auth import TokenAuthority
    from daarion_city.config import Settings
    from daarion_city.feed.service import FeedService
    from daarion_city.matrix.service import MatrixGateway
    from daarion_city.metrics import Metrics
    from daarion_city.presence.service import PresenceService
    from daarion_city.pubsub import PubSub
    from daarion_city.ratelimit import RateLimiter
    from daarion_city.realtime.hub import RoomHub
    from daarion_city.rooms.service import RoomService
    from daarion_city.secondme.service import SecondMeService
    from daarion_city.storage.database import Database


@dataclass
class Resources:
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
    services: frozenset[str] = field(default_factory=frozenset)


def get_resources(conn: HTTPConnection) -> Resources:
    resources: Resources = conn.app.state.resources
    return resources
