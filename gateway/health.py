"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gateway.core.db import DatabaseDep
from gateway.core.redis import get_redis

router = APIRouter(tags=["health"])
logger = logging.getLogger("gateway.health")
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(db: DatabaseDep, redis: Annotated[Any, Depends(get_redis)]) -> JSONResponse:
    """Ready when the database answers; `degraded` (still 200) when Redis does not."""
    checks: dict[str, str] = {"database": await _check("database", db.ping())}
    if redis is not None:
        checks["redis"] = await _check("redis", redis.ping())
    if checks["database"] != "ok":
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    return JSONResponse({"status": status, "checks": checks})


async def _check(name: str, probe: Any) -> str:
    try:
        await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # any driver error or timeout means "not reachable"
        logger.warning("readiness: %s check failed: %s", name, type(exc).__name__)
        return "unavailable"
    return "ok"
