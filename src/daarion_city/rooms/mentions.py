"""Mentions in a message body: ``<@USER_ID>`` (SPEC 9 and 12), listed once each in order of
appearance. An id is a city user id (``[A-Za-z0-9_.=-]{1,80}``) or a Matrix id
(``@name:server``), known to the service or not."""

from __future__ import annotations

from daarion_city.core.errors import Unprocessable
from daarion_city.core.validation import MENTION


def mentions_in(body: str, limit: int) -> list[str]:
    """The distinct ids mentioned in ``body``, in order; more than ``limit`` is 422
    ``too_many_mentions``."""
    found = list(dict.fromkeys(MENTION.findall(body))) if "<@" in body else []
    if len(found) > limit:
        raise Unprocessable(
            f"{len(found)} distinct mentions; at most {limit}", code="too_many_mentions"
        )
    return found
