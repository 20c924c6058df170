"""The authenticated caller, as every layer sees it: a plain value that imports nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    name: str
    admin: bool = False  # CITY_ADMINS or the token's "admin": true claim (SPEC 10)
