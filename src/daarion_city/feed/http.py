"""HTTP routes of the city feed: the list, and the Server-Sent Events stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from daarion_city.core.answers import public_read
from daarion_city.core.provided import provided
from daarion_city.core.validation import FEED_EVENT_ID_PATTERN
from daarion_city.feed.schemas import FeedEvent, FeedKind
from daarion_city.feed.service import FEED, FeedService, RecordedEvent

router = APIRouter(prefix="/city/feed", tags=["feed"])

KEEPALIVE_SECONDS = 15.0


@router.get(
    "",
    response_model=list[FeedEvent],
    responses={404: {"description": "`before` names no event (`event_not_found`)"}},
)
async def list_feed(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=80, pattern=FEED_EVENT_ID_PATTERN)] = None,
    kind: FeedKind | None = None,
) -> Response:
    page = await provided(request, FEED).page(limit=limit, before=before, kind=kind)
    return public_read(request, page)


def _sse(event: RecordedEvent) -> bytes:
    event_id = str(event.wire["id"]).encode()
    return b"id: " + event_id + b"\ndata: " + orjson.dumps(event.wire) + b"\n\n"


async def _frames(feed: FeedService, last_event_id: str | None) -> AsyncIterator[bytes]:
    yield b"retry: 3000\n\n"
    async for event in feed.stream(last_event_id, keepalive=KEEPALIVE_SECONDS):
        yield b": keep-alive\n\n" if event is None else _sse(event)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "feed events as SSE"}},
)
async def stream_feed(
    request: Request,
    last_event_id: Annotated[
        str | None, Header(max_length=80, pattern=FEED_EVENT_ID_PATTERN)
    ] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=80,
            pattern=FEED_EVENT_ID_PATTERN,
            description="Last-Event-ID for clients that cannot set headers",
        ),
    ] = None,
) -> StreamingResponse:
    """An id that is not an event id's shape is refused (422) before the stream starts; a
    well-formed one that names no event starts the stream live, with nothing replayed."""
    feed = provided(request, FEED)
    return StreamingResponse(
        _frames(feed, last_event_id or since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
