"""The room socket's frames: the client frames it accepts and the frames it sends, with the
models of both (``/asyncapi.json`` is generated from them), and the personal frames the rooms
send on presence sockets (``rooms/unread.py``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from daarion_city.core.validation import JsonLimits
from daarion_city.realtime.protocol import (
    DEFAULT_LIMITS,
    Frame,
    Ping,
    ServerFrame,
    encode,
    parse_frame,
)
from daarion_city.rooms.schemas import (
    ClientMsgId,
    Message,
    MessageBody,
    Notification,
    OnlineMember,
    Reaction,
    ReplyToSeq,
    UnreadCounts,
)


class MessageSend(Frame):
    """Stored and broadcast like ``POST .../messages`` (same rate limit and idempotency): the
    sender gets ``room.message`` like everyone, then ``room.message.ack``."""

    event: Literal["room.message.send"]
    body: MessageBody
    client_msg_id: ClientMsgId | None = None
    reply_to_seq: ReplyToSeq | None = None


class Typing(Frame):
    """The sender's typing flag: the others get ``room.typing`` when the announced flag changes
    (at most once per ``CITY_TYPING_INTERVAL``; a true flag expires after
    ``CITY_TYPING_TIMEOUT``)."""

    event: Literal["room.typing"]
    typing: bool


class LegacyMembership(Frame):
    """``room.join`` / ``room.leave`` from old clients: accepted and ignored."""

    event: Literal["room.join", "room.leave"]


RoomClientFrame = Annotated[
    MessageSend | Typing | Ping | LegacyMembership, Field(discriminator="event")
]
_room_frames: TypeAdapter[RoomClientFrame] = TypeAdapter(RoomClientFrame)
ROOM_EVENTS = frozenset({"room.message.send", "room.typing", "ping", "room.join", "room.leave"})


def parse_room_frame(
    text: str | bytes | None, limits: JsonLimits = DEFAULT_LIMITS
) -> RoomClientFrame:
    frame: RoomClientFrame = parse_frame(text, _room_frames, ROOM_EVENTS, limits)
    return frame


def message_frame(room_id: str, message: dict[str, Any]) -> str:
    return encode({"event": "room.message", "room_id": room_id, "message": message})


def timeline_frame(event: str, room_id: str, seq: int, message: dict[str, Any]) -> str:
    """``room.message.edit`` / ``room.message.delete``: the timeline ``seq`` and the whole
    message as it is after the change."""
    return encode({"event": event, "room_id": room_id, "seq": seq, "message": message})


def reaction_frame(
    room_id: str,
    seq: int,
    target_seq: int,
    user_id: str,
    emoji: str,
    op: str,
    reactions: list[dict[str, Any]],
) -> str:
    return encode(
        {
            "event": "room.reaction",
            "room_id": room_id,
            "seq": seq,
            "target_seq": target_seq,
            "user_id": user_id,
            "emoji": emoji,
            "op": op,
            "reactions": reactions,
        }
    )


# --- what the room socket sends (models of the frames built above and in the rooms' modules) ---


class RoomState(ServerFrame):
    """The first frame of every socket: the room's newest timeline ``seq`` and who has a
    socket in it now (this user included). Sent again, fresh, to every socket of the room when
    it crosses the large-room threshold either way (SPEC 2b, §12)."""

    event: Literal["room.state"]
    room_id: str
    last_seq: int
    members_online: int = Field(
        ge=0, description="distinct users with a socket open to the room, on every instance"
    )
    large: bool = Field(
        description="large-room mode: above CITY_LARGE_ROOM users online (until below 3/4 of "
        "it): no room.join/room.leave and no presence.update on the room's sockets, "
        "room.online instead"
    )
    online_members: list[OnlineMember] = Field(
        description="at most CITY_LARGE_ROOM_LIST (200) of them: by name in a small room, the "
        "most recently active first in a large one"
    )


class RoomOnline(ServerFrame):
    """A large room's count of online users, at most once per ``CITY_ROOM_ONLINE_INTERVAL``
    (1 s) while it changes (instead of per-user ``room.join`` / ``room.leave``)."""

    event: Literal["room.online"]
    room_id: str
    members_online: int = Field(ge=0)


class RoomMessage(ServerFrame):
    """A committed message of the room, in ``seq`` order, once per socket (the sender's own
    included); also replayed after ``since_seq``."""

    event: Literal["room.message"]
    room_id: str
    message: Message


class MessageChange(ServerFrame):
    """A message edited or deleted: ``seq`` is the change's timeline seq, ``message`` the
    whole message after it (apply it only if ``seq`` is above the last one applied to it)."""

    event: Literal["room.message.edit", "room.message.delete"]
    room_id: str
    seq: int
    message: Message


class ReactionChange(ServerFrame):
    """A reaction added or removed; ``reactions`` is the message's whole list after it."""

    event: Literal["room.reaction"]
    room_id: str
    seq: int
    target_seq: int
    user_id: str
    emoji: str
    op: Literal["add", "remove"]
    reactions: list[Reaction]


class MessageAck(ServerFrame):
    """To the sender of a ``room.message.send``, after the commit (a repeated
    ``client_msg_id`` gets only this, with the stored message)."""

    event: Literal["room.message.ack"]
    client_msg_id: str | None
    message: Message


class Occupancy(ServerFrame):
    """Another user's first socket to the room opened, or their last one closed
    (``room.join`` / ``room.leave``)."""

    event: Literal["room.join", "room.leave"]
    room_id: str
    user_id: str
    name: str


class TypingNotice(ServerFrame):
    """Another user's typing flag changed or expired."""

    event: Literal["room.typing"]
    room_id: str
    user_id: str
    name: str
    typing: bool


class MemberChange(ServerFrame):
    """A persisted membership change over HTTP (to everyone, the user's own sockets too)."""

    event: Literal["room.member"]
    room_id: str
    user_id: str
    name: str
    membership: Literal["join", "leave"]


ROOM_CLIENT_FRAMES: tuple[type[Frame], ...] = (MessageSend, Typing, Ping, LegacyMembership)
ROOM_SERVER_FRAMES: tuple[type[ServerFrame], ...] = (
    RoomState,
    RoomOnline,
    RoomMessage,
    MessageChange,
    ReactionChange,
    MessageAck,
    Occupancy,
    TypingNotice,
    MemberChange,
)
# The room socket's own error codes (besides the codec's, realtime/protocol.FRAME_ERRORS).
ROOM_ERRORS = {
    "rate_limited": "room.message.send (with client_msg_id) or room.typing over the sender's "
    "bucket; retry_after",
    "slow_mode": "a second message within the room's slow_mode_s; retry_after",
    "invalid_reply": "room.message.send whose reply_to_seq names no message of the room",
    "too_many_mentions": "room.message.send mentioning more than CITY_MAX_MENTIONS users",
    "room_not_found": "the room of a room.message.send is gone",
    "muted": "room.message.send by a user muted here; expires_at",
    "banned": "banned from the room: before the 4403 close; expires_at",
    "kicked": "kicked out of the room: before the 4403 close",
    "suspended": "the account is suspended: before the 4403 close; expires_at",
    "resync_required": "since_seq ahead of the room or beyond CITY_RESUME_LIMIT: catch up over "
    "HTTP (the socket continues live)",
}


# --- the rooms' personal frames, sent on the user's presence sockets (rooms/unread.py) ---


class UnreadUpdate(ServerFrame, UnreadCounts):
    """The user's counts in one room: their marker moved, a notification changed their mention
    count, or new messages and deletions came (at most once per room per
    ``CITY_UNREAD_PUSH_INTERVAL`` while they keep coming)."""

    event: Literal["unread.update"]


class UnreadBulk(ServerFrame):
    """The counts of every room the user lists: with the opening snapshot, and again after a
    bus outage."""

    event: Literal["unread.bulk"]
    rooms: list[UnreadCounts]


class NotificationFrame(ServerFrame, Notification):
    """The user was mentioned or replied to."""

    event: Literal["notification"]


PERSONAL_FRAMES: tuple[type[ServerFrame], ...] = (UnreadUpdate, UnreadBulk, NotificationFrame)
