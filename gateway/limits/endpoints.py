"""`GET /v1/limits`: the tenant's limits and what is left now in each window."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth.dependencies import current_principal
from gateway.auth.principal import Principal
from gateway.core.json_body import JsonBodyRoute
from gateway.limits.dependencies import QuotasDep
from gateway.limits.headers import add_headers, spend_headers, token_headers
from gateway.limits.policy import (
    QuotaLimits,
    request_limits,
    seconds_to_midnight,
    seconds_to_month_end,
)
from gateway.limits.requests import WindowState
from tenants.price.money import micro_to_usd

router = APIRouter(route_class=JsonBodyRoute, tags=["limits"])


def _window(limit: int | None, used: int, reset_s: float) -> dict[str, Any] | None:
    if limit is None:
        return None
    return {
        "limit": limit,
        "used": used,
        "remaining": max(0, limit - used),
        "reset_seconds": round(max(0.0, reset_s), 3),
    }


def _spend_window(limit: int | None, used: int, reset_s: float) -> dict[str, Any] | None:
    """A spend window in exact decimal USD strings (micro-dollar counters)."""
    if limit is None:
        return None
    return {
        "limit": micro_to_usd(limit),
        "used": micro_to_usd(used),
        "remaining": micro_to_usd(max(0, limit - used)),
        "reset_seconds": round(max(0.0, reset_s), 3),
    }


@router.get("/limits", summary="This tenant's limits and what is left now")
async def get_limits(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    quotas: QuotasDep,
) -> dict[str, Any]:
    per_tenant, per_user = request_limits(principal.limits)
    quota = QuotaLimits.of(principal.limits)
    checked: dict[str, WindowState] = {
        s.code: s for s in request.scope["state"].get("ratelimit_states", [])
    }
    snapshot = await quotas.peek(principal)
    windows: dict[str, Any] = {}
    for code, limit in (
        ("requests_per_minute", per_tenant),
        ("requests_per_minute_per_user", per_user if principal.user else None),
    ):
        state = checked.get(code)
        windows[code] = (
            _window(limit, limit - state.remaining, state.reset_s)
            if state is not None and limit is not None
            else _window(limit, 0, 0.0)
        )
    windows["tokens_per_minute"] = _window(
        quota.tokens_per_minute, snapshot.tpm_used, snapshot.tpm_reset_s
    )
    windows["tokens_per_day"] = _window(
        quota.tokens_per_day, snapshot.tpd_used, seconds_to_midnight()
    )
    windows["max_concurrent_runs"] = _window(quota.max_concurrent_runs, snapshot.in_flight, 0.0)
    windows["spend_per_day_usd"] = _spend_window(
        quota.spend_per_day, snapshot.spd_used, seconds_to_midnight()
    )
    windows["spend_per_month_usd"] = _spend_window(
        quota.spend_per_month, snapshot.spm_used, seconds_to_month_end()
    )
    headers = token_headers(quota, snapshot.tpm_used, snapshot.tpm_reset_s, snapshot.tpd_used)
    headers.update(spend_headers(quota, snapshot.spd_used, snapshot.spm_used))
    add_headers(request.scope["state"], headers)
    limits = {
        "requests_per_minute": per_tenant,
        "requests_per_minute_per_user": per_user,
        "tokens_per_minute": quota.tokens_per_minute,
        "tokens_per_day": quota.tokens_per_day,
        "max_concurrent_runs": quota.max_concurrent_runs,
        "spend_per_day_usd": _usd(quota.spend_per_day),
        "spend_per_month_usd": _usd(quota.spend_per_month),
    }
    return {
        "object": "limits",
        "tenant": principal.tenant_slug,
        "limits": limits,
        "windows": windows,
        "degraded": quotas.breaker.degraded,
    }


def _usd(micro: int | None) -> str | None:
    return None if micro is None else micro_to_usd(micro)
