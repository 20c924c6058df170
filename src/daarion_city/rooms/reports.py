"""Reports of messages (SPEC section 10 and 12): any signed-in user reports a message (one open
report per reporter and message: a repeat answers the one filed); the room's moderators and up
see its reports and resolve each once, with an action: dismiss it, delete the message, or mute
or ban its author. A report keeps a copy of the text as it was reported, shown only to those who
may resolve it; another room's report is 404 to a moderator. The resolution and its audit entry
are one transaction; the action taken is audited by itself too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from daarion_city.core.clock import iso, utcnow
from daarion_city.core.errors import Conflict, Forbidden, NotFound
from daarion_city.core.ids import new_id
from daarion_city.identity.principal import Principal
from daarion_city.rooms.moderation import Moderation
from daarion_city.rooms.policy import Policies
from daarion_city.rooms.powers import Power, Rank, may
from daarion_city.rooms.schemas import last_message_wire
from daarion_city.rooms.timeline import Timeline
from daarion_city.storage import moderation as moderation_store
from daarion_city.storage import reports as store
from daarion_city.storage import rooms as room_store
from daarion_city.storage import timeline as timeline_store
from daarion_city.storage.database import Database

ACTIONS = ("dismiss", "delete_message", "mute_author", "ban_author")


def report_wire(
    row: Any, *, resolver: bool, message: dict[str, Any] | None = None
) -> dict[str, Any]:
    wire = {
        "id": row.id,
        "room_id": row.room_id,
        "seq": row.seq,
        "reporter_id": row.reporter_id,
        "reason": row.reason,
        "status": row.status,
        "action": row.action,
        "resolved_by": row.resolved_by,
        "created_at": iso(row.created_at),
    }
    if message is not None:
        wire["message"] = message
    if resolver:  # the text as reported, for those who may act on it
        wire["reported_text"] = row.text
    return wire


class Reports:
    def __init__(
        self,
        *,
        db: Database,
        policies: Policies,
        moderation: Moderation,
        timeline: Timeline,
        resolve: Callable[[str], Awaitable[str]],
    ) -> None:
        self.db = db
        self.policies = policies
        self.moderation = moderation
        self.timeline = timeline
        self._resolve = resolve

    async def file(
        self, user: Principal, ref: str, seq: int, reason: str
    ) -> tuple[dict[str, Any], bool]:
        """A report, and whether it is new (a repeat of an open one answers that one)."""
        room_id = await self._resolve(ref)
        async with self.db.begin() as conn:
            found = await timeline_store.messages_at(conn, room_id, {seq})
            message = found.get(seq)
            if message is None:
                raise NotFound(f"no message {seq} in this room", code="message_not_found")
            if message.deleted:
                raise Conflict("the message is deleted", code="message_deleted")
            open_one = await store.find_open(conn, user.user_id, room_id, seq)
            if open_one is not None:
                return report_wire(open_one, resolver=False), False
            row = {
                "id": new_id("rep"),
                "room_id": room_id,
                "seq": seq,
                "reporter_id": user.user_id,
                "reason": reason,
                "text": message.body,
                "author_id": message.author_user_id,
                "status": "open",
                "created_at": utcnow(),
            }
            await store.insert_report(conn, row)
            filed = await store.get_report(conn, row["id"])
        return report_wire(filed, resolver=False), True

    async def listed(
        self, user: Principal, *, status: str | None, ref: str | None, limit: int
    ) -> list[dict[str, Any]]:
        room_id = None if ref is None else await self._resolve(ref)
        async with self.db.read() as conn:
            visible: list[str] | None = None
            if not user.admin:
                owned = await room_store.rooms_created_by(conn, user.user_id)
                visible = sorted(
                    set(owned) | set(await moderation_store.moderated_by(conn, user.user_id))
                )
            rows = await store.list_reports(
                conn,
                status=status,
                room_id=room_id,
                visible_rooms=visible,
                reporter_id=user.user_id,
                limit=limit,
            )
        out = []
        for row in rows:
            resolver = user.admin or (visible is not None and row.room_id in visible)
            message = last_message_wire(row, store.M_PREFIX)
            out.append(report_wire(row, resolver=resolver, message=message))
        return out

    async def resolve(
        self, user: Principal, report_id: str, action: str, duration_s: int | None
    ) -> dict[str, Any]:
        async with self.db.read() as conn:
            report = await store.get_report(conn, report_id)
        if report is None:
            raise NotFound(f"no report {report_id!r}", code="report_not_found")
        policy = await self.policies.of(report.room_id)
        if not may(policy.rank(user), Power.RESOLVE_REPORT):
            if report.reporter_id == user.user_id:
                raise Forbidden("reports are resolved by the room's moderators")
            raise NotFound(f"no report {report_id!r}", code="report_not_found")
        if report.status != "open":
            raise Conflict("the report is resolved already", code="report_resolved")
        author = report.author_id
        if action == "delete_message":
            await self.timeline.delete_message(user, report.room_id, report.seq)
        elif action in ("mute_author", "ban_author") and author is not None:
            kind = "mute" if action == "mute_author" else "ban"
            await self.moderation.sanction(
                user, report.room_id, kind, author, duration_s=duration_s, reason=report.reason
            )
        elif action != "dismiss":
            raise Conflict("the message has no author to sanction", code="no_author")
        async with self.db.begin() as conn:
            if not await store.resolve_report(conn, report_id, action, user.user_id, utcnow()):
                raise Conflict("the report is resolved already", code="report_resolved")
            entry = moderation_store.audit_row(
                report.room_id,
                "report_resolved",
                user.user_id,
                target_user_id=author,
                target_seq=report.seq,
                reason=report.reason,
                details={"report_id": report_id, "action": action},
            )
            await moderation_store.insert_audit(conn, entry)
            resolved = await store.get_report(conn, report_id)
        return report_wire(resolved, resolver=policy.rank(user) >= Rank.MODERATOR)
