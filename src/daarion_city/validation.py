"""Validators shared by the wire schemas of several domains."""

from __future__ import annotations

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
