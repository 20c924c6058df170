"""Validators shared by the wire schemas of several domains."""

from __future__ import annotations

from pydantic import AfterValidator


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NotBlank = AfterValidator(not_blank)
"""Use as ``Annotated[str, StringConstraints(min_length=1, max_length=N), NotBlank]``."""
