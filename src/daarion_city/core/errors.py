"""One error root for the whole service.

Services raise a :class:`CityError` subclass carrying a machine ``code``, an HTTP ``status`` and
a WebSocket ``close_code``; :func:`error_answer` maps them to ``{"detail", "code"}`` answers (for
the installed handlers and the post lane alike), and the WebSocket handlers map them to
``{"event": "error", "code", "message"}`` frames, and a socket refused while it opens to its
``close_code`` (the table of close codes: ``realtime/closes.py``). No service raises
``HTTPException``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from daarion_city.core.clock import as_utc, iso

log = logging.getLogger(__name__)


class CityError(Exception):
    """Base of every domain error: ``code`` is stable, ``detail`` is for humans."""

    status: int = 400
    code: str = "bad_request"
    close_code: int = 1011  # a socket refused with this error (realtime/closes.py)

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        self.detail = detail or self.code.replace("_", " ")
        if code is not None:
            self.code = code
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code}


class BadRequest(CityError):
    status, code = 400, "bad_request"


class Unauthorized(CityError):
    status, code, close_code = 401, "unauthorized", 4401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(CityError):
    status, code = 403, "forbidden"


class Sanctioned(Forbidden):
    """403 ``banned``, ``muted`` (or ``kicked``, ``suspended`` on sockets), with the sanction's
    end at the top level of the error (``expires_at``: None until lifted)."""

    close_code = 4403  # realtime/closes.CLOSE_FORBIDDEN

    def __init__(self, code: str, detail: str, expires_at: datetime | None) -> None:
        super().__init__(detail, code=code)
        self.expires_at = expires_at

    def body(self) -> dict[str, Any]:
        end = None if self.expires_at is None else iso(as_utc(self.expires_at))
        return {**super().body(), "expires_at": end}


class NotFound(CityError):
    status, code, close_code = 404, "not_found", 4404


class Conflict(CityError):
    status, code = 409, "conflict"


class PayloadTooLarge(CityError):
    status, code = 413, "payload_too_large"


class Unprocessable(CityError):
    status, code = 422, "validation_error"


class RateLimited(CityError):
    status, code = 429, "rate_limited"

    def __init__(self, retry_after: float, detail: str | None = None) -> None:
        self.retry_after = max(0.0, retry_after)
        super().__init__(detail or "too many requests, slow down")

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(self.retry_after + 0.999)))}

    def body(self) -> dict[str, Any]:
        return {**super().body(), "retry_after": round(self.retry_after, 3)}


class Unavailable(CityError):
    status, code, close_code = 503, "unavailable", 1013


class Internal(CityError):
    """What a request that failed unexpectedly is answered (the error itself is logged)."""

    status, code = 500, "internal"


class ErrorBody(BaseModel):
    """The answer of every failed request (FastAPI's 422 validation list aside)."""

    detail: str
    code: str
    retry_after: float | None = None  # on 429 only, beside the Retry-After header
    max_tokens: int | None = None  # on 422 prompt_too_long only


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """422: what was wrong with the request, item by item (FastAPI's shape, with a code)."""

    detail: list[ValidationItem]
    code: str


def error_doc(description: str) -> dict[str, Any]:
    """An entry of a route's ``responses=``: the error body, described."""
    return {"model": ErrorBody, "description": description}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """The methods the API routes (not the static files mounted at "/") serve at the path of
    ``scope``, found by asking each route whether it would take the request with each method."""
    methods: list[str] = []
    routes = [r for r in getattr(app, "routes", ()) if not isinstance(r, Mount)]
    for method in _METHODS:
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            methods.append(method)
    return methods


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def unexpected_error(scope: Scope, exc: Exception) -> JSONResponse:
    """Log an error no handler expected; the 500 ``internal`` answer, which tells nothing."""
    log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
    return error_response(Internal("internal error"))


def error_answer(scope: Scope, exc: Exception) -> JSONResponse:
    """The answer to an error raised while serving ``scope``: a domain error's own, anything else
    logged and answered 500 ``internal``."""
    if isinstance(exc, CityError):
        return error_response(exc)
    return unexpected_error(scope, exc)


def error_response(exc: CityError) -> JSONResponse:
    """The answer to a domain error: its status, ``{"detail", "code"}`` and its headers."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and framework errors to the SPEC's error shape."""

    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return error_answer(request.scope, exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()
        ]
        return JSONResponse({"detail": errors, "code": "validation_error"}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        status = exc.status_code
        detail = str(exc.detail)
        if status in (404, 405):
            # An API path asked with a method it does not serve falls through to the static
            # files mounted at "/", which answer 404 (GET) or 405 "Allow: GET, HEAD": when an
            # API route serves the path, answer 405 naming that route's methods.
            methods = allowed_methods(request.app, request.scope)
            if methods and request.method not in methods:
                status, code, detail = 405, "method_not_allowed", "Method Not Allowed"
                headers["Allow"] = ", ".join(methods)
        return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)

    app.add_exception_handler(CityError, answer)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, answer)
