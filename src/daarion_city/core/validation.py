"""Validators shared by the wire schemas of several domains."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# --- what a client may send: numbers and identifiers ----------------------------------------------
MAX_SEQ = 2**63 - 1
# The largest seq a JSON body may name: JavaScript's largest safe integer (a JSON number above it
# reaches most clients and schema validators as a double, rounded).
MAX_JSON_SEQ = 2**53 - 1
"""The largest seq (and feed position) a store holds: a signed 64-bit BIGINT. A larger number in a
query or a ``since_seq`` is refused (422, or close 4400), never handed to the database."""
MAX_LAST_ACTIVE_MS = 10**12
"""A heartbeat's ``last_active_ago_ms`` (about 31 years), over HTTP and in a presence frame."""

# Identifiers by their shape, checked before any of them reaches a query. Patterns that pydantic
# applies (``Query(pattern=...)``) run on its Rust engine, where ``$`` is the end of the text;
# Python's ``re`` lets ``$`` match before a final newline, so here they are used with fullmatch.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,63}$"
ROOM_ID_PREFIX = "room_city_"
USER_ID_PATTERN = r"^[A-Za-z0-9_.=-]{1,80}$"
# A city user, or a Matrix user the rooms bridge brings in (an author id: 80 characters at most).
AUTHOR_ID_PATTERN = r"^(?:[A-Za-z0-9_.=-]+|@[a-z0-9._=/-]+:[A-Za-z0-9.:\[\]-]+)$"
MAX_AUTHOR_ID = 80
"""A city user id, as a token's ``sub`` must be (SPEC section 12); ``ag_`` ones are agents'."""
# A mention in a message body (SPEC 9 and 12): ``<@ID>``, a city user id or a Matrix id.
MENTION = re.compile(r"<@([A-Za-z0-9_.=-]{1,80}|@[^\s<>:]+:[^\s<>]+)>")
FEED_EVENT_ID_PATTERN = r"^evt_[a-z0-9_]{1,76}$"
"""``evt_`` then 28 hex digits (ids.new_id), or a seed event's ``evt_city_welcome_001``."""
AGENT_PREFIX = "ag_"

_SLUG = re.compile(SLUG_PATTERN)
_USER_ID = re.compile(USER_ID_PATTERN)
_FEED_EVENT_ID = re.compile(FEED_EVENT_ID_PATTERN)


def whole_number(value: Any) -> Any:
    """A JSON number with no fraction (``5.0``) as the integer it is: JSON Schema counts it as an
    integer. Anything else is left for the strict ``int`` check after it (``true``, ``"5"`` and
    ``5.5`` stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_slug(value: str) -> bool:
    return _SLUG.fullmatch(value) is not None


def is_room_ref(ref: str) -> bool:
    """A room is named by its slug or its id ``room_city_<slug>``: anything else names none."""
    if is_slug(ref):
        return True
    return ref.startswith(ROOM_ID_PREFIX) and is_slug(ref[len(ROOM_ID_PREFIX) :])


def is_user_id(value: str) -> bool:
    """The shape of a city user id (agents' ``ag_`` ids included)."""
    return _USER_ID.fullmatch(value) is not None


def is_feed_event_id(value: str) -> bool:
    return _FEED_EVENT_ID.fullmatch(value) is not None


def user_id_problem(sub: str) -> str | None:
    """Why ``sub`` cannot be a token's subject (SPEC section 12), or None."""
    if not is_user_id(sub):
        return f"a user id must match {USER_ID_PATTERN}"
    if sub[: len(AGENT_PREFIX)].lower() == AGENT_PREFIX:
        return f"user ids beginning with {AGENT_PREFIX!r} are reserved for agents"
    return None


# --- what a person may type ----------------------------------------------------------------------
# Invisible: every format character (Unicode category Cf: zero-width space and joiners, the BOM,
# bidi marks, tags ...), every Default_Ignorable_Code_Point (variation selectors, the Hangul
# fillers U+115F U+1160 U+3164 U+FFA0, the combining grapheme joiner ...) and U+2800 BRAILLE
# PATTERN BLANK. tests/core/test_validation.py holds the class to Python's Unicode data.
INVISIBLE_CLASS = (
    r"\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u115f-\u1160"
    r"\u17b4-\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164"
    r"\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
CONTROL_CLASS = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc
BIDI_CONTROL_CLASS = r"\u202a-\u202e\u2066-\u2069"  # embeddings, overrides, isolates
# A visible character: not whitespace, not a control, not invisible (ZWJ emoji sequences and
# Arabic or Hebrew text have plenty).
VISIBLE_CLASS = rf"[^\s{CONTROL_CLASS}{INVISIBLE_CLASS}]"
_VISIBLE = re.compile(VISIBLE_CLASS)
_NAME_FORBIDDEN = re.compile(rf"[{CONTROL_CLASS}{BIDI_CONTROL_CLASS}]")
_INVISIBLE = re.compile(rf"[{INVISIBLE_CLASS}]+")

# The rules below as JSON Schema patterns (Python ``re`` semantics, whose ``\s`` is exactly
# ``str.isspace``), so the OpenAPI document says what the validators enforce.
NOT_BLANK_PATTERN = rf"^[^\x00]*{VISIBLE_CLASS}[^\x00]*\Z"
NO_NUL_PATTERN = r"^[^\x00]*\Z"
_NAME_CHAR = rf"[^{CONTROL_CLASS}{BIDI_CONTROL_CLASS}]"
NAME_PATTERN = rf"^{_NAME_CHAR}*{VISIBLE_CLASS}{_NAME_CHAR}*\Z"
_AGENT_LOOKING = rf"[\s{INVISIBLE_CLASS}]*[aA][{INVISIBLE_CLASS}]*[gG][{INVISIBLE_CLASS}]*_"
DISPLAY_NAME_PATTERN = rf"^(?!{_AGENT_LOOKING}){_NAME_CHAR}*{VISIBLE_CLASS}{_NAME_CHAR}*\Z"


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


def has_visible(value: str) -> bool:
    return _VISIBLE.search(value) is not None


def not_blank(value: str) -> str:
    """Text a user typed: something visible (not only whitespace and invisible characters), and
    no NUL character (PostgreSQL text cannot hold one, so it would fail its whole transaction)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not has_visible(value):
        raise ValueError("must not be blank (whitespace and invisible characters only)")
    return value


NotBlank = DocumentedValidator(not_blank, NOT_BLANK_PATTERN)
"""Use as ``Annotated[str, StringConstraints(min_length=1, max_length=N), NotBlank]``."""


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = DocumentedValidator(no_nul, NO_NUL_PATTERN)


def name_problem(value: str, *, agent_names: bool = True) -> str | None:
    """Why ``value`` cannot be a name people see, or None: a control character (a newline, a
    tab) or a bidi embedding/override/isolate, which would reorder or break the text around
    it; nothing visible; or, unless ``agent_names``, a name that begins with ``ag_`` (any case,
    invisible characters ignored), which is how agents are named."""
    if _NAME_FORBIDDEN.search(value):
        return "must not contain control characters or bidi overrides"
    if not has_visible(value):
        return "must contain a visible character"
    if not agent_names:
        visible = _INVISIBLE.sub("", value).lstrip()
        if visible[: len(AGENT_PREFIX)].lower() == AGENT_PREFIX:
            return f"names beginning with {AGENT_PREFIX!r} are reserved for agents"
    return None


def room_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def display_name(value: str) -> str:
    """A person's name (guests, tokens): the room-name rules, and not an agent's ``ag_``."""
    problem = name_problem(value, agent_names=False)
    if problem is not None:
        raise ValueError(problem)
    return value.strip()


RoomName = DocumentedValidator(room_name, NAME_PATTERN)
"""Use as ``Annotated[str, StringConstraints(min_length=1, max_length=N), RoomName]``."""
DisplayName = DocumentedValidator(display_name, DISPLAY_NAME_PATTERN)
"""Leading and trailing spaces are dropped after the check."""


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
