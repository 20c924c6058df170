"""Validators shared by the wire schemas of several domains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import AfterValidator


def not_blank(value: str) -> str:
    """Text a user typed: not only whitespace, and no NUL character (PostgreSQL text cannot
    hold one, so it would fail the whole transaction it is in)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NotBlank = AfterValidator(not_blank)
"""Use as ``Annotated[str, StringConstraints(min_length=1, max_length=N), NotBlank]``."""


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = AfterValidator(no_nul)


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """How deep a JSON document may nest and how many items one array or object may hold
    (``CITY_MAX_JSON_DEPTH`` / ``CITY_MAX_JSON_ITEMS``), checked on every HTTP body and
    WebSocket frame after parsing and before any model sees it."""

    depth: int = 16
    items: int = 1000

    def violation(self, value: Any) -> str | None:
        """Why ``value`` breaks the limits, or None. Iterative: deep input cannot recurse."""
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict | list):
                if depth > self.depth:
                    return f"JSON nests deeper than {self.depth} levels"
                if len(item) > self.items:
                    return f"a JSON array or object holds more than {self.items} items"
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
        return None
