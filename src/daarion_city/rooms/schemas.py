"""Wire shapes of rooms and messages (pydantic at the edges; rows never leave the stores)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from daarion_city.core.clock import iso
from daarion_city.core.validation import MAX_JSON_SEQ, SLUG_PATTERN, NoNul, NotBlank, RoomName

MAX_BODY_CHARS = 10_000


MessageBody = Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS), NotBlank]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class RoomCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), RoomName]
    description: Annotated[str, StringConstraints(max_length=500), NoNul] = ""


ReplyToSeq = Annotated[int, Field(ge=1, le=MAX_JSON_SEQ)]


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: MessageBody
    client_msg_id: ClientMsgId | None = None
    reply_to_seq: ReplyToSeq | None = None


class MessageEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: MessageBody


class Reaction(BaseModel):
    emoji: str
    count: int
    users: list[str] = Field(description="up to 20 user ids, in the order they reacted")


class Message(BaseModel):
    id: str
    room_id: str
    seq: int
    author_user_id: str | None
    author_agent_id: str | None
    username: str
    body: str
    client_msg_id: str | None
    created_at: str = Field(examples=["2026-11-24T22:43:16.123Z"])
    reply_to_seq: int | None
    mentions: list[str]
    edited_at: str | None
    deleted: bool
    deleted_by: str | None
    reactions: list[Reaction]


class OnlineMember(BaseModel):
    user_id: str
    name: str
    status: str


class Room(BaseModel):
    id: str
    slug: str
    name: str
    description: str
    is_default: bool
    created_at: str
    created_by: str | None
    owner_id: str | None = Field(description="the room's owner: its creator (seed rooms: none)")
    slow_mode_s: int = Field(description="a member posts at most once per this many seconds")
    matrix_room_id: str | None = Field(description="the bridged Matrix room (SPEC 6b), or null")
    matrix_room_alias: str | None = Field(description="its alias #city_<slug>:<server>, or null")
    member_count: int
    members_online: int
    last_message: Message | None


class RoomDetail(Room):
    messages: list[Message]
    online_members: list[OnlineMember]


class MessagePage(BaseModel):
    messages: list[Message]
    has_more: bool


class SearchHit(BaseModel):
    message: Message
    snippet: str = Field(description="the text HTML-escaped, each match in <mark>..</mark>")


class SearchPage(BaseModel):
    results: list[SearchHit] = Field(description="newest first")
    next: str | None = Field(description="the cursor of the next page (`before`), or null")


class Reactions(BaseModel):
    room_id: str
    seq: int
    reactions: list[Reaction]


class TimelinePage(BaseModel):
    events: list[dict[str, Any]] = Field(
        description="timeline events as the room socket sends them"
    )
    has_more: bool


class ReadMarker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(ge=0, le=MAX_JSON_SEQ)]


class UnreadCounts(BaseModel):
    room_id: str
    last_read_seq: int
    unread_count: int = Field(description="messages after the marker, not deleted, not yours")
    mention_count: int = Field(description="those of them that notify you")


class Notification(BaseModel):
    id: str
    kind: str = Field(description='"mention" or "reply"')
    room_id: str
    message: Message = Field(description="the message as it is now (a tombstone once deleted)")
    created_at: str
    read: bool = Field(description="its seq is at or before your read marker of its room")


class Me(BaseModel):
    user_id: str
    name: str
    admin: bool
    suspended: bool
    moderates: list[str]
    owns: list[str]


class MembershipAnswer(BaseModel):
    status: str
    room_id: str


def message_wire(row: Any) -> dict[str, Any]:
    """A message row as the SPEC's Message object."""
    return {
        "id": row.id,
        "room_id": row.room_id,
        "seq": row.seq,
        "author_user_id": row.author_user_id,
        "author_agent_id": row.author_agent_id,
        "username": row.username,
        "body": row.body,
        "client_msg_id": row.client_msg_id,
        "created_at": iso(row.created_at),
        "reply_to_seq": row.reply_to_seq,
        "mentions": row.mentions,
        "edited_at": None if row.edited_at is None else iso(row.edited_at),
        "deleted": bool(row.deleted),
        "deleted_by": row.deleted_by,
        "reactions": row.reactions,
    }


def last_message_wire(row: Any, prefix: str) -> dict[str, Any] | None:
    """The newest message joined to a room row (columns named ``prefix`` + the message's), or
    None for a room without messages."""
    if getattr(row, prefix + "id") is None:
        return None
    n = len(prefix)
    fields = {key[n:]: value for key, value in row._mapping.items() if key.startswith(prefix)}
    return message_wire(SimpleNamespace(**fields))


def room_wire(
    row: Any, *, members_online: int, last_message: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "description": row.description,
        "is_default": bool(row.is_default),
        "created_at": iso(row.created_at),
        "created_by": row.created_by,
        "owner_id": row.created_by,
        "slow_mode_s": row.slow_mode_s,
        "matrix_room_id": row.matrix_room_id,
        "matrix_room_alias": row.matrix_room_alias,
        "member_count": row.member_count,
        "members_online": members_online,
        "last_message": last_message,
    }
