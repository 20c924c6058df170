"""Matrix routes: the internal presence endpoint of the original design, and the
application-service endpoints the homeserver calls."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from daarion_city.errors import BadRequest, CityError, Unauthorized
from daarion_city.matrix.service import MatrixGateway
from daarion_city.resources import get_resources

router = APIRouter(tags=["matrix"])
MATRIX_STATUSES = ("online", "unavailable", "offline")


class NotConfigured(CityError):
    status, code = 503, "matrix_not_configured"


class PresenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    matrix_user_id: Annotated[str, Field(max_length=255)]
    status: Annotated[str, Field(max_length=32)]
    status_msg: Annotated[str, Field(max_length=1000)] | None = None
    access_token: Annotated[str, Field(max_length=4096)] | None = None


class PresenceAnswer(BaseModel):
    ok: bool
    matrix_user_id: str
    status: str


def _gateway(request: Request) -> MatrixGateway:
    gateway = get_resources(request).matrix
    if gateway is None:
        raise NotConfigured("the Matrix gateway is not configured (MATRIX_HOMESERVER_URL)")
    return gateway


@router.post(
    "/internal/matrix/presence/online",
    response_model=PresenceAnswer,
    responses={
        400: {"description": "`invalid_status`, `invalid_user_id` or `not_in_namespace`"},
        401: {"description": "wrong or missing X-Internal-Token (`unauthorized`)"},
        502: {"description": "`matrix_error` with `matrix_status` and `errcode`"},
        503: {"description": "`homeserver_unavailable` or `matrix_not_configured`"},
    },
)
async def set_presence(
    request: Request,
    body: PresenceRequest,
    x_internal_token: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    settings = get_resources(request).settings
    expected = settings.matrix_gateway_internal_token
    if (
        expected is None
        or not expected.get_secret_value()
        or x_internal_token is None
        or not secrets.compare_digest(x_internal_token, expected.get_secret_value())
    ):
        raise Unauthorized("wrong or missing X-Internal-Token")
    gateway = _gateway(request)
    if body.status not in MATRIX_STATUSES:
        raise BadRequest(
            f"status must be one of {', '.join(MATRIX_STATUSES)}", code="invalid_status"
        )
    if not gateway.valid_user_id(body.matrix_user_id):
        raise BadRequest("matrix_user_id must look like @user:server", code="invalid_user_id")
    try:
        await gateway.set_presence(
            body.matrix_user_id,
            body.status,
            status_msg=body.status_msg,
            access_token=body.access_token,
        )
    except ValueError as exc:
        raise BadRequest(
            "without access_token only the gateway's puppets (@city_…) can be set",
            code="not_in_namespace",
        ) from exc
    return {"ok": True, "matrix_user_id": body.matrix_user_id, "status": body.status}


def _matrix_error(status: int, errcode: str, error: str) -> JSONResponse:
    return JSONResponse({"errcode": errcode, "error": error}, status_code=status)


def _hs_token(request: Request, authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:]
    return request.query_params.get("access_token")


@router.put("/_matrix/app/v1/transactions/{txn_id}", include_in_schema=False)
async def transaction(
    request: Request, txn_id: str, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    gateway = _gateway(request)
    token = _hs_token(request, authorization)
    if token is None:
        return _matrix_error(401, "M_UNAUTHORIZED", "missing hs_token")
    if not gateway.appservice.authorised(token):
        return _matrix_error(403, "M_FORBIDDEN", "wrong hs_token")
    try:
        body = await request.json()
    except ValueError:
        return _matrix_error(400, "M_NOT_JSON", "the transaction is not JSON")
    if not isinstance(body, dict):
        return _matrix_error(400, "M_BAD_JSON", "the transaction must be an object")
    gateway.appservice.handle_transaction(txn_id, body)
    return JSONResponse({})


@router.get("/_matrix/app/v1/users/{user_id}", include_in_schema=False)
async def query_user(
    request: Request, user_id: str, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    gateway = _gateway(request)
    if not gateway.appservice.authorised(_hs_token(request, authorization)):
        return _matrix_error(403, "M_FORBIDDEN", "wrong hs_token")
    if not gateway.appservice.is_puppet(user_id):
        return _matrix_error(404, "M_NOT_FOUND", "not a puppet of this bridge")
    return JSONResponse({})
