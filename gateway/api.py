"""The one place routers are mounted."""

from __future__ import annotations

from fastapi import FastAPI

from gateway import health
from gateway.agents.endpoints import router as agents_router
from gateway.runs.endpoints import router as runs_router
from gateway.usage.endpoints import router as usage_router
from tenants.admin.router import admin_router


def mount_routes(app: FastAPI) -> None:
    app.include_router(health.router)
    app.include_router(agents_router, prefix="/v1")
    app.include_router(runs_router, prefix="/v1")
    app.include_router(usage_router, prefix="/v1")
    app.include_router(admin_router, prefix="/admin")
