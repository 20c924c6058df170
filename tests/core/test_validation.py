"""The shapes of what a client sends, as pure rules: identifiers, names and the patterns that
guard them (issue 18, findings 5, 9 and 13)."""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError

from daarion_city.core.logs import request_id
from daarion_city.core.validation import (
    DISPLAY_NAME_PATTERN,
    FEED_EVENT_ID_PATTERN,
    INVISIBLE_CLASS,
    NAME_PATTERN,
    NOT_BLANK_PATTERN,
    SLUG_PATTERN,
    USER_ID_PATTERN,
    display_name,
    has_visible,
    is_feed_event_id,
    is_room_ref,
    is_slug,
    is_user_id,
    not_blank,
    room_name,
    user_id_problem,
)
from daarion_city.edge.middleware import bind_request_id
from daarion_city.identity.http import GuestRequest
from daarion_city.matrix.ids import city_user_of, is_valid_user_id, puppet_id
from daarion_city.rooms.schemas import MessageCreate, RoomCreate


def _request_id(value: str) -> str:
    rid, token = bind_request_id({"headers": [(b"x-request-id", value.encode())]})
    request_id.reset(token)
    return rid


@pytest.mark.parametrize(
    ("check", "valid"),
    [
        (is_slug, "general"),
        (is_room_ref, "general"),
        (is_room_ref, "room_city_general"),
        (is_user_id, "u_alice"),
        (is_feed_event_id, "evt_city_welcome_001"),
        (is_valid_user_id, "@city_u__alice:localhost"),
        (lambda v: city_user_of(v, "localhost") is not None, puppet_id("u_alice", "localhost")),
        (lambda v: _request_id(v) == v, "req-1"),
        (lambda v: user_id_problem(v) is None, "u_alice"),
    ],
)
def test_no_input_pattern_lets_a_trailing_newline_through(check: Any, valid: str) -> None:
    assert check(valid)
    assert not check(valid + "\n")
    assert not check(valid + "\x00")
    assert not check("\n" + valid)


@pytest.mark.parametrize("pattern", [SLUG_PATTERN, USER_ID_PATTERN, FEED_EVENT_ID_PATTERN])
def test_patterns_pydantic_applies_refuse_a_trailing_newline(pattern: str) -> None:
    """Query(pattern=...) and StringConstraints(pattern=...) run on pydantic-core's engine."""
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])
    valid = {SLUG_PATTERN: "general", USER_ID_PATTERN: "u_alice"}.get(pattern, "evt_abc")
    assert adapter.validate_python(valid) == valid
    with pytest.raises(ValidationError):
        adapter.validate_python(valid + "\n")


def test_models_refuse_a_trailing_newline_in_slugs() -> None:
    with pytest.raises(ValidationError):
        RoomCreate.model_validate({"slug": "general\n", "name": "General"})
    assert RoomCreate.model_validate({"slug": "general", "name": "General"}).slug == "general"


def test_room_refs_are_slugs_or_room_ids() -> None:
    for ref in ("general", "room_city_general", "room_city_x1", "a-b_c", "room_city_", "r" * 64):
        assert is_room_ref(ref), ref
    for ref in ("", "g", "General", "room_city_G", "a/b", "a b", "é", "r" * 65, "room_city_X"):
        assert not is_room_ref(ref), ref


def test_the_invisible_class_holds_every_format_character_and_the_blank_looking_ones() -> None:
    invisible = re.compile(f"[{INVISIBLE_CLASS}]")
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)) == "Cf":
            assert invisible.match(chr(cp)), hex(cp)
    # Default_Ignorable_Code_Point characters of other categories, and the Braille blank.
    for cp in (0x34F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0xFE0F, 0xE0100, 0x180B, 0x17B4):
        assert invisible.match(chr(cp)), hex(cp)
    for char in "aЯ中😀٣א\u0301 ":
        assert not invisible.match(char), char


@pytest.mark.parametrize(
    "text", ["\u200b\u200d\ufeff", "", " \n\t", "\u3164\u2800\u115f", "\x01\x7f", "\U000e0041"]
)
def test_text_of_invisible_characters_only_is_blank(text: str) -> None:
    assert not has_visible(text)
    with pytest.raises(ValueError, match="blank"):
        not_blank(text)
    with pytest.raises(ValidationError):
        MessageCreate.model_validate({"body": text})


@pytest.mark.parametrize(
    "text", ["👨\u200d👩\u200d👧", "مرحبا", "\u200fשלום", "❤\ufe0f", "a\u200b", "é", "\u0301"]
)
def test_text_with_something_visible_is_kept(text: str) -> None:
    assert not_blank(text) == text
    assert MessageCreate.model_validate({"body": text}).body == text
    assert room_name(text) == text
    assert display_name(text) == text


@pytest.mark.parametrize(
    ("name", "room_ok"),
    [
        ("Al\nice", False),
        ("Alice\r", False),
        ("tab\there", False),
        ("\u202eevil", False),
        ("\u2066isolated\u2069", False),
        ("nul\x00", False),
        ("\x85next line", False),
        ("\u200b\ufeff", False),
        ("ag_system", True),
        ("AG_System", True),
        (" ag_x", True),
        ("a\u200bg\u200d_x", True),
    ],
)
def test_names_people_see(name: str, room_ok: bool) -> None:
    with pytest.raises(ValueError, match=r"control|visible|reserved for agents"):
        display_name(name)
    with pytest.raises(ValidationError):
        GuestRequest.model_validate({"name": name})
    if room_ok:
        assert room_name(name) == name
    else:
        with pytest.raises(ValueError, match=r"control|visible"):
            room_name(name)


NAME_SAMPLES = [
    "Alice",
    "  Alice  ",
    "Alice\n",
    "\nAlice",
    "ag_",
    "Ag_",
    "a\u200bg_",
    "\u200b ag_x",
    "agx",
    "a g_",
    "\u202ex",
    "x\u2069",
    "\u200e",
    "\u200fשלום",
    "👨\u200d👩\u200d👧",
    "\x00",
    "",
    " ",
    "\u3000",
    "\u2800x",
]


@pytest.mark.parametrize("sample", NAME_SAMPLES)
def test_the_documented_patterns_say_what_the_validators_do(sample: str) -> None:
    """schemathesis generates from these patterns (Python re semantics), so they must agree."""

    def accepts(func: Any) -> bool:
        try:
            func(sample)
        except ValueError:
            return False
        return True

    for pattern, func in (
        (DISPLAY_NAME_PATTERN, display_name),
        (NAME_PATTERN, room_name),
        (NOT_BLANK_PATTERN, not_blank),
    ):
        assert (re.search(pattern, sample) is not None) == accepts(func), (pattern[:20], sample)


def test_user_ids_follow_the_contract() -> None:
    assert user_id_problem("u_0123abcd") is None
    assert user_id_problem("alice.smith=x-1") is None
    for sub in ("ag_system", "AG_X", "", "a" * 81, "a b", "Олена", "a/b", "@a:b", "u\n"):
        assert user_id_problem(sub) is not None, sub


def test_guest_names_are_trimmed_after_the_check() -> None:
    assert GuestRequest.model_validate({"name": "  Alice "}).name == "Alice"
