"""Operations routes: liveness, readiness, Prometheus metrics and the public client config."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from daarion_city.config import SETTINGS
from daarion_city.core.metrics import CONTENT_TYPE_LATEST, METRICS
from daarion_city.core.provided import provided
from daarion_city.pubsub import BUS
from daarion_city.storage.database import DB

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
async def readyz(request: Request) -> JSONResponse:
    bus = provided(request, BUS)
    checks = {"database": await provided(request, DB).ping()}
    if bus.distributed:
        checks["redis"] = await bus.ping()
    ready = all(checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if not ready:
        body["code"] = "unavailable"
        body["detail"] = "not ready: " + ", ".join(k for k, ok in checks.items() if not ok)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = provided(request, METRICS)
    await registry.collect()  # the online count as it is now, not as of the last sweep
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/city/config")
async def client_config(request: Request) -> dict[str, Any]:
    """What a client needs to behave: presence timings and whether guests may sign in."""
    s = provided(request, SETTINGS)
    return {
        "allow_guests": s.city_allow_guests,
        "presence_ttl": s.presence_ttl,
        "presence_heartbeat_interval": s.presence_heartbeat_interval,
        "presence_away_after": s.presence_away_after,
        "max_message_chars": 10_000,
        "resume_limit": s.city_resume_limit,
    }
