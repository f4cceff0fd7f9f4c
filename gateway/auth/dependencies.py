"""FastAPI dependencies for tenant routes: `TenantDep` and scope checks.

A bearer token starting with `gw_` (or any `X-API-Key`) is an API key; any other bearer token
is treated as an end-user JWT. Both paths answer every bad credential with the same 401.

A browser's WebSocket cannot set headers, so a WebSocket handshake may carry its bearer token
as an offered subprotocol instead, `bearer.<token>` (`new WebSocket(url, ["agent-gateway",
"bearer." + token])`; API keys and JWTs are made of characters a subprotocol may hold). The
socket answers with the `agent-gateway` subprotocol, never the credential's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.auth.api_keys import failed, resolve_api_key
from gateway.auth.jwt import resolve_jwt
from gateway.auth.principal import Principal
from gateway.core.errors import AuthenticationFailedError, PermissionDeniedError
from gateway.core.state import app_state
from tenants.api_key.keys import KEY_PREFIX

BEARER_SUBPROTOCOL = "bearer."
"""A WebSocket subprotocol that carries a bearer token (browsers cannot set headers)."""


def _credential(request: HTTPConnection) -> tuple[str, bool] | None:
    """(token, is_api_key) of the request, or None (also when it names more than one
    credential: two `Authorization` or `X-API-Key` fields or `bearer.` subprotocols, or two
    kinds that differ, are refused rather than resolved by picking one)."""
    headers = request.headers
    authorizations = headers.getlist("authorization")
    keys = headers.getlist("x-api-key")
    offered = _subprotocol_tokens(request) if request.scope["type"] == "websocket" else []
    if len(authorizations) > 1 or len(keys) > 1 or len(offered) > 1:
        return None
    tokens = set(keys) | set(offered)
    if authorizations:
        scheme, _, token = authorizations[0].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or (tokens and tokens != {token}):
            return None
        return token, token.startswith(KEY_PREFIX)
    if len(tokens) != 1:
        return None
    (token,) = tokens
    if not token:
        return None
    return token, bool(keys) or token.startswith(KEY_PREFIX)


def _subprotocol_tokens(request: HTTPConnection) -> list[str]:
    subprotocols: list[str] = request.scope.get("subprotocols") or []
    return [p[len(BEARER_SUBPROTOCOL) :] for p in subprotocols if p.startswith(BEARER_SUBPROTOCOL)]


def _address(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


async def current_principal(request: HTTPConnection) -> Principal:
    """The authenticated tenant of this request or WebSocket handshake (401 / 403 / 429
    otherwise); an API key is marked used (`last_used_at`)."""
    principal = await identify_tenant(request)
    if principal.key_id is not None:
        app_state(request).recorder.mark_key_used(principal.key_id)
    return principal


async def identify_tenant(request: HTTPConnection) -> Principal:
    """`current_principal` without marking the key used: the admin API identifies a tenant
    credential only to refuse it (403), which is no use of the key."""
    request.state.auth_tried = True  # once per request (a failure counts once)
    credential = _credential(request)
    if credential is None:
        raise AuthenticationFailedError()
    token, is_api_key = credential
    state = app_state(request)
    settings = state.settings
    if is_api_key:
        principal = await resolve_api_key(
            token,
            secret_key=settings.secret_key,
            cache=state.principals,
            db=state.db,
            failures=state.auth_failures,
            address=_address(request),
            old_secret_keys=settings.old_secret_keys,
        )
    else:
        principal = await _resolve_jwt(request, token)
    request.state.principal = principal  # also for a suspended tenant's headers
    if principal.tenant_status != "active":
        raise PermissionDeniedError("This tenant is suspended.", code="tenant_suspended")
    return principal


async def _resolve_jwt(request: HTTPConnection, token: str) -> Principal:
    state = app_state(request)
    address = _address(request)
    state.auth_failures.check(address)
    try:
        return await resolve_jwt(
            token,
            audience=state.settings.jwt_audience,
            secret_key=state.settings.secret_keys,
            cache=state.issuers,
            db=state.db,
        )
    except AuthenticationFailedError:
        raise await failed(state.auth_failures, address) from None


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that also demands `scope` of the credential."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise PermissionDeniedError(
                f"This credential lacks the '{scope}' scope.", code="missing_scope"
            )
        return principal

    return check


RunsPrincipal = Annotated[Principal, Depends(require_scope("runs"))]
UsagePrincipal = Annotated[Principal, Depends(require_scope("usage"))]
