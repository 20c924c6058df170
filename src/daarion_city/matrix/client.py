"""The homeserver client-server API calls the gateway needs, over one shared ``httpx`` client.

Ids in paths are percent-encoded; every call has a timeout. A homeserver that cannot be reached
raises :class:`HomeserverUnavailable` (503); one that answers with an error raises
:class:`MatrixError` (502) carrying its HTTP status and ``errcode``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from daarion_city.core.errors import CityError


class HomeserverUnavailable(CityError):
    status, code = 503, "homeserver_unavailable"


class MatrixError(CityError):
    status, code = 502, "matrix_error"

    def __init__(self, matrix_status: int, errcode: str, error: str) -> None:
        self.matrix_status = matrix_status
        self.errcode = errcode
        super().__init__(f"the homeserver answered {matrix_status} {errcode}: {error}")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "matrix_status": self.matrix_status, "errcode": self.errcode}


def _q(value: str) -> str:
    return quote(value, safe="")


class HomeserverClient:
    def __init__(self, base_url: str, *, as_token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.as_token = as_token
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self.requests = 0  # calls made, for metrics and tests

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        self.requests += 1
        headers = {"Authorization": f"Bearer {token or self.as_token}"}
        try:
            response = await self.http.request(
                method, path, params=params, json=json, headers=headers
            )
        except httpx.HTTPError as exc:
            raise HomeserverUnavailable(
                f"the homeserver is unreachable: {type(exc).__name__}"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            if not isinstance(data, dict):
                data = {}
            raise MatrixError(
                response.status_code,
                str(data.get("errcode", "M_UNKNOWN")),
                str(data.get("error", response.reason_phrase)),
            )
        return data

    async def versions(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_matrix/client/versions")
        return result

    async def register_puppet(self, localpart: str) -> None:
        """Register an application-service user; one that exists already is fine."""
        try:
            await self._call(
                "POST",
                "/_matrix/client/v3/register",
                json={"type": "m.login.application_service", "username": localpart},
            )
        except MatrixError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise

    async def set_presence(
        self,
        user_id: str,
        presence: str,
        *,
        status_msg: str | None = None,
        access_token: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"presence": presence}
        if status_msg is not None:
            body["status_msg"] = status_msg
        params = None if access_token else {"user_id": user_id}  # masquerade as the puppet
        await self._call(
            "PUT",
            f"/_matrix/client/v3/presence/{_q(user_id)}/status",
            token=access_token,
            params=params,
            json=body,
        )

    async def get_presence(
        self, user_id: str, *, access_token: str | None = None
    ) -> dict[str, Any]:
        params = None if access_token else {"user_id": user_id}
        result: dict[str, Any] = await self._call(
            "GET",
            f"/_matrix/client/v3/presence/{_q(user_id)}/status",
            token=access_token,
            params=params,
        )
        return result

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", f"/_matrix/client/v3/directory/room/{_q(alias)}"
        )
        return result

    # --- rooms (the rooms bridge; ``as_user`` masquerades as a user of the namespace) ---------
    @staticmethod
    def _as(user_id: str | None) -> dict[str, str] | None:
        return {"user_id": user_id} if user_id else None

    async def room_of_alias(self, alias: str) -> str | None:
        """The room an alias names, or None when it names none."""
        try:
            found = await self.resolve_alias(alias)
        except MatrixError as exc:
            if exc.matrix_status == 404:
                return None
            raise
        return str(found["room_id"])

    async def create_room(self, **body: Any) -> str:
        result = await self._call("POST", "/_matrix/client/v3/createRoom", json=body)
        return str(result["room_id"])

    async def join(self, room: str, *, as_user: str | None = None) -> None:
        await self._call(
            "POST", f"/_matrix/client/v3/join/{_q(room)}", params=self._as(as_user), json={}
        )

    async def send(
        self,
        room_id: str,
        event_type: str,
        txn_id: str,
        content: dict[str, Any],
        *,
        as_user: str | None = None,
        ts: int | None = None,
    ) -> str:
        """An event, idempotent on ``txn_id`` for the sender; its event id. ``ts`` (ms): the
        time it happened, which an application service may give its users' events."""
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{_q(txn_id)}"
        params = self._as(as_user) or {}
        if ts is not None:
            params["ts"] = str(ts)
        result = await self._call("PUT", path, params=params or None, json=content)
        return str(result["event_id"])

    async def redact(
        self,
        room_id: str,
        event_id: str,
        txn_id: str,
        *,
        as_user: str | None = None,
        reason: str | None = None,
    ) -> None:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/redact/{_q(event_id)}/{_q(txn_id)}"
        body = {"reason": reason} if reason else {}
        await self._call("PUT", path, params=self._as(as_user), json=body)

    async def set_displayname(self, user_id: str, name: str) -> None:
        path = f"/_matrix/client/v3/profile/{_q(user_id)}/displayname"
        await self._call("PUT", path, params=self._as(user_id), json={"displayname": name})

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """Every state event of the room (with its sender)."""
        result = await self._call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state")
        return [e for e in result if isinstance(e, dict)] if isinstance(result, list) else []

    async def ban(
        self, room_id: str, user_id: str, reason: str | None, *, unban: bool = False
    ) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason and not unban:
            body["reason"] = reason
        action = "unban" if unban else "ban"
        await self._call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/{action}", json=body)
