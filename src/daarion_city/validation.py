"""Validators shared by the wire schemas of several domains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# The two rules below as JSON Schema patterns (Python ``re`` semantics, whose ``\s`` is exactly
# ``str.isspace``), so the OpenAPI document says what the validators enforce.
NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"


@dataclass(frozen=True, slots=True)
class DocumentedValidator:
    """An after-validator of a ``str`` that also writes its rule into the JSON schema."""

    func: Callable[[str], str]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.func, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        value = handler(schema)
        value["pattern"] = self.pattern
        return value


def not_blank(value: str) -> str:
    """Text a user typed: not only whitespace, and no NUL character (PostgreSQL text cannot
    hold one, so it would fail the whole transaction it is in)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NotBlank = DocumentedValidator(not_blank, NOT_BLANK_PATTERN)
"""Use as ``Annotated[str, StringConstraints(min_length=1, max_length=N), NotBlank]``."""


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = DocumentedValidator(no_nul, NO_NUL_PATTERN)


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
