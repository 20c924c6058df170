"""Your data (SPEC 11) wired: the identity's ``YourData`` given every domain's exporter and
eraser, in the order an erasure runs them (the rooms first: tombstones, reactions and
memberships, through their own commit paths; then Second Me). Presence keeps only a record that
runs out with ``PRESENCE_TTL`` once the user's sockets close, which the retirement does."""

from __future__ import annotations

from typing import Any

from daarion_city.config import Settings
from daarion_city.identity.retirements import Retirements
from daarion_city.identity.yourdata import YourData
from daarion_city.presence.service import PresenceService
from daarion_city.ratelimit import RateLimiter
from daarion_city.rooms.erasure import RoomsData
from daarion_city.rooms.service import RoomService
from daarion_city.secondme.yourdata import SecondMeData
from daarion_city.storage.database import Database


def your_data(
    settings: Settings,
    db: Database,
    retirements: Retirements,
    limiter: RateLimiter,
    rooms: RoomService,
    presence: PresenceService,
) -> YourData:
    data = YourData(db, retirements, limiter, settings.city_export_rate)
    in_rooms = RoomsData(db, rooms.feed, rooms.commit, rooms.membership, rooms.policies)
    secondme = SecondMeData(db)

    async def presence_part(user_id: str) -> dict[str, Any]:
        return {"presence": await presence.reads.get(user_id)}

    async def secondme_part(user_id: str) -> dict[str, Any]:
        return {"secondme": await secondme.export(user_id)}

    data.exporters += [in_rooms.export, presence_part, secondme_part]
    data.erasers += [in_rooms.erase, secondme.erase]
    return data
