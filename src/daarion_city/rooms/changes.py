"""What a timeline change is to the room's commit queue (``GroupCommit.change``): a callable
that commits it (an edit or a deletion, ``rooms/timeline.py``) and what it answers. Reaction
changes are data instead (``rooms/reactions.Reaction``), so that consecutive ones commit
together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from daarion_city.feed.service import RecordedEvent


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """What a change answers, and its frame (None when it changed nothing)."""

    answer: dict[str, Any]
    frame: tuple[int, str] | None
    events: list[RecordedEvent] = field(default_factory=list)  # feed events to publish
    mentioned: list[str] = field(default_factory=list)  # users an edit newly mentions
    more: list[tuple[int, str]] = field(default_factory=list)  # frames after ``frame`` (erasure)


Change = Callable[[], Awaitable[ChangeResult]]
