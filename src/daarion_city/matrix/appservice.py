"""The application-service side: the registration file, and the endpoints the homeserver calls.

``daarion-city matrix-registration`` prints the registration YAML for the settings (tokens taken
from ``MATRIX_AS_TOKEN`` / ``MATRIX_HS_TOKEN``, or generated when unset and printed so that the
operator can set them). The homeserver pushes transactions to
``PUT /_matrix/app/v1/transactions/{txnId}``: each is checked against ``hs_token`` and handled
once (a repeat of a ``txnId`` is acknowledged and ignored); presence events of puppets are
recorded. ``GET /_matrix/app/v1/users/{userId}`` answers for the puppet namespace.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from typing import Any

from daarion_city.config import Settings
from daarion_city.matrix.ids import PUPPET_PREFIX, city_user_of

SENDER_LOCALPART = "city_bridge"
REMEMBERED_TRANSACTIONS = 10_000


def namespace_regex(server_name: str) -> str:
    return f"@{PUPPET_PREFIX}.*:{re.escape(server_name)}"


def registration(settings: Settings) -> dict[str, Any]:
    as_token = settings.matrix_as_token.get_secret_value() if settings.matrix_as_token else ""
    hs_token = settings.matrix_hs_token.get_secret_value() if settings.matrix_hs_token else ""
    return {
        "id": "daarion-city",
        "url": settings.matrix_as_url or None,
        "as_token": as_token or secrets.token_urlsafe(32),
        "hs_token": hs_token or secrets.token_urlsafe(32),
        "sender_localpart": SENDER_LOCALPART,
        "namespaces": {
            "users": [{"exclusive": True, "regex": namespace_regex(settings.matrix_server_name)}],
            "aliases": [
                {"exclusive": True, "regex": f"#city_.*:{re.escape(settings.matrix_server_name)}"}
            ],
            "rooms": [],
        },
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
    }


def registration_yaml(reg: dict[str, Any]) -> str:
    """YAML for exactly this shape (strings quoted, so any token survives)."""

    def scalar(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'

    ns = reg["namespaces"]
    lines = [f"{key}: {scalar(reg[key])}" for key in ("id", "url", "as_token", "hs_token")]
    lines.append(f"sender_localpart: {scalar(reg['sender_localpart'])}")
    lines.append("namespaces:")
    lines.append("  users:")
    for entry in ns["users"]:
        lines.append(f"    - exclusive: {scalar(entry['exclusive'])}")
        lines.append(f"      regex: {scalar(entry['regex'])}")
    lines.append("  aliases:")
    for entry in ns["aliases"]:
        lines.append(f"    - exclusive: {scalar(entry['exclusive'])}")
        lines.append(f"      regex: {scalar(entry['regex'])}")
    lines.append("  rooms: []")
    for key in ("rate_limited", "receive_ephemeral", "de.sorunome.msc2409.push_ephemeral"):
        lines.append(f"{scalar(key) if '.' in key else key}: {scalar(reg[key])}")
    return "\n".join(lines) + "\n"


class AppService:
    """State of the application-service endpoints: seen transactions, puppets' Matrix presence."""

    def __init__(self, *, hs_token: str, server_name: str) -> None:
        self.hs_token = hs_token
        self.server_name = server_name
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.matrix_presence: dict[str, dict[str, Any]] = {}

    def authorised(self, token: str | None) -> bool:
        return (
            bool(self.hs_token)
            and token is not None
            # bytes: compare_digest refuses str beyond ASCII, which a header may carry
            and secrets.compare_digest(token.encode(), self.hs_token.encode())
        )

    def handle_transaction(self, txn_id: str, body: dict[str, Any]) -> bool:
        """Process a transaction once; False if this ``txn_id`` was handled already."""
        if txn_id in self._seen:
            return False
        events = [
            *body.get("events", []),
            *body.get("ephemeral", []),
            *body.get("de.sorunome.msc2409.ephemeral", []),
        ]
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "m.presence":
                continue
            sender = event.get("sender")
            content = event.get("content")
            if isinstance(sender, str) and isinstance(content, dict) and self.is_puppet(sender):
                self.matrix_presence[sender] = content
        self._seen[txn_id] = None
        while len(self._seen) > REMEMBERED_TRANSACTIONS:
            self._seen.popitem(last=False)
        return True

    def is_puppet(self, matrix_user_id: str) -> bool:
        return city_user_of(matrix_user_id, self.server_name) is not None
