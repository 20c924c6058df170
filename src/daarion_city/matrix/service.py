"""The Matrix gateway's shared objects, built once in the lifespan when it is configured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daarion_city.config import Settings
from daarion_city.core.provided import Key
from daarion_city.matrix.appservice import SENDER_LOCALPART, AppService
from daarion_city.matrix.bridge import PresenceBridge
from daarion_city.matrix.client import HomeserverClient, HomeserverUnavailable, MatrixError
from daarion_city.matrix.ids import city_user_of, is_valid_user_id, puppet_localpart
from daarion_city.matrix.ports import CityRooms
from daarion_city.matrix.rooms import RoomsBridge
from daarion_city.storage.database import Database

__all__ = ["HomeserverUnavailable", "MatrixError", "MatrixGateway"]


@dataclass
class MatrixGateway:
    settings: Settings
    client: HomeserverClient
    appservice: AppService
    bridge: PresenceBridge | None
    rooms: RoomsBridge | None = None

    @classmethod
    def create(
        cls, settings: Settings, db: Database | None = None, rooms: CityRooms | None = None
    ) -> MatrixGateway | None:
        """The gateway when ``MATRIX_HOMESERVER_URL`` is set; with ``MATRIX_AS_TOKEN`` its
        presence bridge, and with ``MATRIX_BRIDGE_ROOMS`` (and the rooms) its rooms bridge."""
        if not settings.matrix_homeserver_url:
            return None
        as_token = settings.matrix_as_token.get_secret_value() if settings.matrix_as_token else ""
        hs_token = settings.matrix_hs_token.get_secret_value() if settings.matrix_hs_token else ""
        client = HomeserverClient(settings.matrix_homeserver_url, as_token=as_token)
        bridge = (
            PresenceBridge(
                client,
                server_name=settings.matrix_server_name,
                min_interval=settings.matrix_presence_min_interval,
            )
            if as_token
            else None
        )
        appservice = AppService(hs_token=hs_token, server_name=settings.matrix_server_name)
        bridged = None
        if as_token and settings.matrix_bridge_rooms.strip() and db is not None and rooms:
            bot = f"@{SENDER_LOCALPART}:{settings.matrix_server_name}"
            bridged = RoomsBridge(db, client, settings, rooms, bot_id=bot)
        return cls(settings, client, appservice, bridge, bridged)

    async def start(self) -> None:
        if self.bridge is not None:
            await self.bridge.start()
        if self.rooms is not None:
            await self.rooms.start()

    async def stop(self) -> None:
        if self.rooms is not None:
            await self.rooms.stop()
        if self.bridge is not None:
            await self.bridge.stop()
        await self.client.close()

    async def transaction(self, txn_id: str, body: dict[str, Any]) -> None:
        """An application-service transaction: presence of puppets, and (bridging rooms) the
        events imported, committed before this returns; a repeated ``txn_id`` does nothing."""
        self.appservice.handle_transaction(txn_id, body)
        events = body.get("events")
        if self.rooms is not None and isinstance(events, list):
            await self.rooms.importer.transaction(txn_id, events)

    async def set_presence(
        self,
        matrix_user_id: str,
        status: str,
        *,
        status_msg: str | None = None,
        access_token: str | None = None,
    ) -> None:
        """As the user (their access token) or, for puppets, through the application service."""
        if access_token:
            await self.client.set_presence(
                matrix_user_id, status, status_msg=status_msg, access_token=access_token
            )
            return
        city_user = city_user_of(matrix_user_id, self.settings.matrix_server_name)
        if city_user is None:
            raise ValueError("not_in_namespace")
        await self.client.register_puppet(puppet_localpart(city_user))
        await self.client.set_presence(matrix_user_id, status, status_msg=status_msg)

    @staticmethod
    def valid_user_id(matrix_user_id: str) -> bool:
        return is_valid_user_id(matrix_user_id)


MATRIX: Key[MatrixGateway | None] = Key("matrix")
