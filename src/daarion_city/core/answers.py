"""JSON answers serialised once, by orjson, from the wire dicts the services build; public reads
carry a validator.

A route that returns a dict makes FastAPI validate it against its ``response_model`` and encode it
again: for the read paths and posts, more server time than the rest of the request. Routes that
answer with :func:`json_answer` keep their models declared for the OpenAPI document, and the
contract tests (``tests/system/test_api_contract.py``) hold the answers to them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


def json_answer(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer's JSON body and its strong validator (a digest of the body), computed once
    (``core/snapshots.py`` keeps them)."""

    body: bytes
    tag: str

    @classmethod
    def of(cls, content: Any) -> Encoded:
        body = orjson.dumps(content)
        return cls(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


def public_read(request: Request, answer: Encoded | Any) -> Response:
    """A public read's answer (content, or an :class:`Encoded` one) with its ``ETag`` and
    ``Cache-Control: no-cache`` (a cache keeps it but asks again each time). A request whose
    ``If-None-Match`` names the current tag gets 304 with no body, as RFC 9110 section 13.1.2
    says; any change to what the read returns changes the tag."""
    encoded = answer if isinstance(answer, Encoded) else Encoded.of(answer)
    headers = {"ETag": encoded.tag, "Cache-Control": "no-cache"}
    wanted = request.headers.get("if-none-match")
    if wanted is not None and _matches(wanted, encoded.tag):
        return Response(status_code=304, headers=headers)
    return Response(encoded.body, 200, headers, media_type="application/json")


def _matches(header: str, tag: str) -> bool:
    """``If-None-Match``: ``*`` or a list of tags, compared weakly (a ``W/`` tag matches too)."""
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in header.split(","))
