"""Matrix routes: the internal presence endpoint of the original design, and the
application-service endpoints the homeserver calls."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from daarion_city.config import SETTINGS
from daarion_city.core.errors import BadRequest, CityError, Unauthorized, error_doc
from daarion_city.core.provided import provided
from daarion_city.matrix.ids import MXID
from daarion_city.matrix.service import MATRIX, MatrixGateway

router = APIRouter(tags=["matrix"])
MATRIX_STATUSES = ("online", "unavailable", "offline")
_internal_token = APIKeyHeader(
    name="X-Internal-Token",
    auto_error=False,
    description="MATRIX_GATEWAY_INTERNAL_TOKEN, for services of the deployment",
)


class NotConfigured(CityError):
    status, code = 503, "matrix_not_configured"


class PresenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # The rules the route answers 400 for (SPEC §6), written into the document too.
    matrix_user_id: Annotated[
        str, Field(max_length=255, json_schema_extra={"pattern": MXID.pattern})
    ]
    status: Annotated[str, Field(max_length=32, json_schema_extra={"enum": list(MATRIX_STATUSES)})]
    status_msg: Annotated[str, Field(max_length=1000)] | None = None
    access_token: Annotated[str, Field(max_length=4096)] | None = None


class PresenceAnswer(BaseModel):
    ok: bool
    matrix_user_id: str
    status: str


async def internal_caller(
    request: Request, token: Annotated[str | None, Security(_internal_token)]
) -> None:
    """A dependency, so a caller without the token gets 401 before its body is even read."""
    expected = provided(request, SETTINGS).matrix_gateway_internal_token
    if (
        expected is None
        or not expected.get_secret_value()
        or token is None
        or not secrets.compare_digest(token.encode(), expected.get_secret_value().encode())
    ):
        raise Unauthorized("wrong or missing X-Internal-Token")


InternalCaller = Annotated[None, Depends(internal_caller)]


def _gateway(request: Request) -> MatrixGateway:
    gateway = provided(request, MATRIX)
    if gateway is None:
        raise NotConfigured("the Matrix gateway is not configured (MATRIX_HOMESERVER_URL)")
    return gateway


@router.post(
    "/internal/matrix/presence/online",
    response_model=PresenceAnswer,
    responses={
        400: error_doc("`invalid_status`, `invalid_user_id` or `not_in_namespace`"),
        401: error_doc("wrong or missing X-Internal-Token (`unauthorized`)"),
        502: error_doc("`matrix_error` with `matrix_status` and `errcode`"),
        503: error_doc("`homeserver_unavailable` or `matrix_not_configured`"),
    },
)
async def set_presence(
    request: Request, body: PresenceRequest, _: InternalCaller
) -> dict[str, Any]:
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
    try:
        await gateway.transaction(txn_id, body)
    except CityError as exc:  # the database: the homeserver sends the transaction again
        return _matrix_error(503, "M_UNKNOWN", exc.detail)
    return JSONResponse({})


@router.get("/_matrix/app/v1/users/{user_id}", include_in_schema=False)
async def query_user(
    request: Request, user_id: str, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    gateway = _gateway(request)
    token = _hs_token(request, authorization)
    if token is None:  # the application-service API: 401 without credentials, 403 wrong ones
        return _matrix_error(401, "M_UNAUTHORIZED", "missing hs_token")
    if not gateway.appservice.authorised(token):
        return _matrix_error(403, "M_FORBIDDEN", "wrong hs_token")
    if not gateway.appservice.is_puppet(user_id):
        return _matrix_error(404, "M_NOT_FOUND", "not a puppet of this bridge")
    return JSONResponse({})
