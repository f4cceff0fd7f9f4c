"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.core.db import DatabaseDep

router = APIRouter(tags=["health"])
logger = logging.getLogger("gateway.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(db: DatabaseDep) -> JSONResponse:
    """Ready when the database answers within 2 s."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(db.ping(), timeout=2.0)
        checks["database"] = "ok"
    except (TimeoutError, OSError, Exception) as exc:  # any driver error means "not ready"
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
