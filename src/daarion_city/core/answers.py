"""JSON answers serialised once, by orjson, from the wire dicts the services build.

A route that returns a dict makes FastAPI validate it against its ``response_model`` and encode it
again: for the read paths and posts, more server time than the rest of the request. Routes that
answer with :func:`json_answer` keep their models declared for the OpenAPI document, and the
contract tests (``tests/system/test_api_contract.py``) hold the answers to them.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_answer(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")
