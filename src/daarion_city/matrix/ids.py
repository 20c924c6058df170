"""City user ids <-> Matrix puppet ids, as a pure, reversible, collision-free mapping.

A Matrix localpart may hold ``a-z 0-9 . _ = - /``. The city id is escaped the way the Matrix
specification suggests for mapping other identifiers: ``_`` becomes ``__``, an upper-case letter
``X`` becomes ``_x``, and any other byte outside the allowed set becomes ``=`` and two lower-case
hex digits. The puppet of ``u_x`` is ``@city_u__x:<server>``. Decoding undoes exactly this, so
two different city ids never share a puppet.
"""

from __future__ import annotations

import re

PUPPET_PREFIX = "city_"
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-/")
# Used with fullmatch only: with match or search, "$" also matches before a final newline.
MXID = re.compile(r"^@([a-z0-9._=\-/]+):([A-Za-z0-9.\-:\[\]]+)$")


def escape(city_id: str) -> str:
    out: list[str] = []
    for byte in city_id.encode("utf-8"):
        char = chr(byte)
        if char in _PLAIN:
            out.append(char)
        elif char == "_":
            out.append("__")
        elif "A" <= char <= "Z":
            out.append("_" + char.lower())
        else:
            out.append(f"={byte:02x}")
    return "".join(out)


def unescape(localpart: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(localpart):
        char = localpart[i]
        if char == "_":
            nxt = localpart[i + 1 : i + 2]
            if nxt == "_":
                raw.append(ord("_"))
            elif nxt and "a" <= nxt <= "z":
                raw.append(ord(nxt.upper()))
            else:
                raise ValueError(f"bad escape in {localpart!r}")
            i += 2
        elif char == "=":
            raw.append(int(localpart[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(char))
            i += 1
    return raw.decode("utf-8")


def puppet_localpart(city_user_id: str) -> str:
    return PUPPET_PREFIX + escape(city_user_id)


def puppet_id(city_user_id: str, server_name: str) -> str:
    return f"@{puppet_localpart(city_user_id)}:{server_name}"


def city_user_of(matrix_user_id: str, server_name: str) -> str | None:
    """The city user behind a puppet id, or None if it is not one of ours."""
    match = MXID.fullmatch(matrix_user_id)
    if not match or match.group(2) != server_name:
        return None
    localpart = match.group(1)
    if not localpart.startswith(PUPPET_PREFIX):
        return None
    try:
        return unescape(localpart[len(PUPPET_PREFIX) :])
    except (ValueError, UnicodeDecodeError):
        return None


def is_valid_user_id(matrix_user_id: str) -> bool:
    return bool(MXID.fullmatch(matrix_user_id)) and len(matrix_user_id) <= 255
