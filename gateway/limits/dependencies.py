"""The request-limit dependency of every `/v1` route (runs after authentication)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from gateway.auth.dependencies import current_principal
from gateway.auth.principal import Principal
from gateway.core.state import app_state
from gateway.limits.headers import add_headers, request_headers
from gateway.limits.quotas import QuotaService
from gateway.limits.requests import RequestLimitExceeded


async def enforce_request_limit(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> None:
    """Count the request against the tenant's (and end user's) request limits; 429 when over."""
    limiter = app_state(request).request_limiter
    state: dict[str, Any] = request.scope["state"]
    try:
        states = await limiter.check(principal)
    except RequestLimitExceeded as exc:
        add_headers(state, request_headers(exc.states))
        raise exc.error from None
    state["ratelimit_states"] = states
    add_headers(state, request_headers(states))


async def get_quotas(request: Request) -> QuotaService:
    return app_state(request).quotas


V1_LIMITS = [Depends(enforce_request_limit)]
"""Dependencies every `/v1` router is mounted with (see gateway/api.py)."""
QuotasDep = Annotated[QuotaService, Depends(get_quotas)]
