"""Operations routes: liveness, readiness, Prometheus metrics and the public client config."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from daarion_city.metrics import CONTENT_TYPE_LATEST
from daarion_city.realtime.transport import DirectWriter
from daarion_city.resources import get_resources

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
async def readyz(request: Request) -> JSONResponse:
    resources = get_resources(request)
    checks = {"database": await resources.db.ping()}
    if resources.bus.distributed:
        checks["redis"] = await resources.bus.ping()
    ready = all(checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if not ready:
        body["code"] = "unavailable"
        body["detail"] = "not ready: " + ", ".join(k for k, ok in checks.items() if not ok)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    resources = get_resources(request)
    try:  # the online count as it is now, not as of the last sweep
        resources.metrics.online_users.set(await resources.presence.store.get_online_count())
    except Exception:  # the store is away: the last count stands (/readyz says why)
        log.warning("presence count for /metrics failed", exc_info=True)
    resources.metrics.deliveries.set(resources.hub.delivered)
    resources.metrics.direct_writes.set(DirectWriter.writes)
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/city/config")
async def client_config(request: Request) -> dict[str, Any]:
    """What a client needs to behave: presence timings and whether guests may sign in."""
    s = get_resources(request).settings
    return {
        "allow_guests": s.city_allow_guests,
        "presence_ttl": s.presence_ttl,
        "presence_heartbeat_interval": s.presence_heartbeat_interval,
        "presence_away_after": s.presence_away_after,
        "max_message_chars": 10_000,
        "resume_limit": s.city_resume_limit,
    }
