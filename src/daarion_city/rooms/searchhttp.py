"""HTTP route of message search: ``GET /city/search`` (public; the rules in ``rooms/search.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from daarion_city.core.answers import json_answer
from daarion_city.core.errors import error_doc
from daarion_city.core.provided import provided
from daarion_city.rooms.http import invalid
from daarion_city.rooms.schemas import SearchPage
from daarion_city.rooms.service import ROOMS

router = APIRouter(prefix="/city", tags=["rooms"])


@router.get(
    "/search",
    response_model=SearchPage,
    responses={
        404: error_doc("`room` names no room (`room_not_found`)"),
        422: invalid("`query_too_short` (no word of 2 characters), `invalid_cursor`"),
        429: error_doc("too many searches from this address (`rate_limited`), see Retry-After"),
        503: error_doc("the search took longer than allowed (`search_timeout`)"),
    },
)
async def search(
    request: Request,
    q: Annotated[str, Query(max_length=500, description="words; the last one a prefix")],
    room: Annotated[str | None, Query(description="a room's id or slug")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
    before: Annotated[str | None, Query(max_length=200, description="`next` of a page")] = None,
) -> Response:
    """Messages containing every word of ``q`` (the last as a prefix), newest first, with a
    snippet that marks the matches in ``<mark>`` around HTML-escaped text. Public."""
    search = provided(request, ROOMS).search
    await search.admit(request.client.host if request.client else "unknown")
    return json_answer(await search.search(q, room=room, limit=limit, before=before))
