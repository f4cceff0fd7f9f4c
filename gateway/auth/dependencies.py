"""FastAPI dependencies for tenant routes: `TenantDep` and scope checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth.api_keys import resolve_api_key
from gateway.auth.principal import Principal
from gateway.core.errors import AuthenticationFailedError, PermissionDeniedError


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return request.headers.get("x-api-key")


async def current_principal(request: Request) -> Principal:
    """The authenticated tenant of this request (401 / 403 otherwise)."""
    token = _credential(request)
    if not token:
        raise AuthenticationFailedError()
    state = request.app.state
    principal = await resolve_api_key(
        token, secret_key=state.settings.secret_key, cache=state.principals, db=state.db
    )
    if principal.tenant_status != "active":
        raise PermissionDeniedError("This tenant is suspended.", code="tenant_suspended")
    if principal.key_id is not None:
        state.recorder.mark_key_used(principal.key_id)
    request.state.principal = principal
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that also demands `scope` of the credential."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise PermissionDeniedError(
                f"This API key lacks the '{scope}' scope.", code="missing_scope"
            )
        return principal

    return check


RunsPrincipal = Annotated[Principal, Depends(require_scope("runs"))]
UsagePrincipal = Annotated[Principal, Depends(require_scope("usage"))]
