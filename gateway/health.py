"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.core.config import SettingsDep
from gateway.core.db import DatabaseDep, SchemaMissingError
from gateway.core.json_body import JsonBodyRoute
from gateway.core.redis import get_redis
from gateway.core.state import app_state

router = APIRouter(route_class=JsonBodyRoute, tags=["health"])
logger = logging.getLogger("gateway.health")
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": 'Not ready: `{"status": "unavailable", "checks": {...}}`, or '
            '`{"status": "draining"}` once the replica received SIGTERM.'
        }
    },
)
async def readyz(
    request: Request,
    db: DatabaseDep,
    redis: Annotated[Any, Depends(get_redis)],
    settings: SettingsDep,
) -> JSONResponse:
    """Ready when the database answers with a migrated schema (`"database": "not migrated"`
    otherwise: every request would be a 503); `degraded` (still 200) when Redis does not, unless
    limits fail closed (`GATEWAY_LIMITS_FAILURE_MODE=closed`): then every /v1 request would
    get 503, so the replica reports itself unavailable (503) too. A replica shutting down
    answers 503 `draining` at once, so that load balancers stop sending it new requests."""
    if app_state(request).drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    checks: dict[str, str] = {"database": await _check("database", db.ping())}
    if redis is not None:
        checks["redis"] = await _check("redis", redis.ping())
    limits_down = settings.limits_failure_mode == "closed" and checks.get("redis", "ok") != "ok"
    if checks["database"] != "ok" or limits_down:
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    return JSONResponse({"status": status, "checks": checks})


async def _check(name: str, probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_S)
    except SchemaMissingError:
        logger.warning("readiness: the database has no schema: run `gateway db upgrade`")
        return "not migrated"
    except Exception as exc:  # any driver error or timeout means "not reachable"
        logger.warning("readiness: %s check failed: %s", name, type(exc).__name__)
        return "unavailable"
    return "ok"


# HEAD answers as GET does (uvicorn sends no body): some load balancers probe with HEAD.
# Routes of their own, out of the schema: one route with both methods would give the
# OpenAPI document two operations with one id.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
