"""Admin credentials for the /admin routes.

Accepted: the bootstrap `GATEWAY_ADMIN_TOKEN` bearer, or an admin JWT from `POST /admin/login`
of a user that still exists (its current role `admin`: everything; `viewer`: GET only, 403
otherwise). A valid tenant credential (an API key, by either header, or an end-user JWT) is
refused with 403, and so is an `X-API-Key` header beside an admin bearer; anything else
missing or wrong, a tenant-shaped credential that is not valid included, with 401. Wrong admin
bearers count against the client in the failed-authentication limit, as bad logins do
(`tenants.admin.failures`).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Response

from gateway.core.config import settings_of
from gateway.core.db import SessionDep
from gateway.core.errors import AuthenticationFailedError, PermissionDeniedError
from gateway.core.state import app_state
from tenants.admin.failures import admin_address, failure_limiter
from tenants.admin.tokens import AdminPrincipal, looks_like_tenant_jwt, verify_admin_token
from tenants.admin.users import get_user_by_id
from tenants.models.api_key import KEY_PREFIX

__all__ = [
    "AdminDep",
    "AdminPrincipal",
    "bearer_token",
    "no_store",
    "refuse_tenant_credentials",
    "require_admin",
]

READ_METHODS = frozenset({"GET", "HEAD"})


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _tenant_credential() -> PermissionDeniedError:
    return PermissionDeniedError(
        "Tenant credentials cannot use the admin API.", code="tenant_credential"
    )


async def _refuse_tenant_credential(request: Request) -> PermissionDeniedError:
    """403 for a tenant credential that is valid; a malformed, unknown, expired or revoked one
    is the usual 401 (raised by the tenant authentication itself)."""
    await app_state(request).authenticate_tenant(request)
    return _tenant_credential()


def _tenant_shaped(request: Request, token: str) -> bool:
    """A bearer that is an API key or an end-user JWT (valid or not)."""
    return token.startswith(KEY_PREFIX) or looks_like_tenant_jwt(
        token, settings_of(request).jwt_audience
    )


async def refuse_tenant_credentials(request: Request) -> None:
    """Dependency of `POST /admin/login`, open to anyone but not to a tenant credential: an
    `X-API-Key`, or a bearer that is an API key or an end-user JWT, is 403 when valid (401
    when not), as on every other /admin route."""
    token = bearer_token(request)
    if request.headers.get("x-api-key") or (token is not None and _tenant_shaped(request, token)):
        raise await _refuse_tenant_credential(request)


def no_store(response: Response) -> None:
    """Dependency of every /admin route: answers that hold a secret shown once (a key, an
    HS256 or tool-signing secret, an admin token) or tenant data are never cached."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


async def _authenticate(request: Request) -> AdminPrincipal:
    token = bearer_token(request)
    if request.headers.get("x-api-key"):
        if token is None:
            raise await _refuse_tenant_credential(request)
        # An admin bearer beside a tenant key is not an admin request with a key to ignore.
        raise _tenant_credential()
    if token is None:
        raise AuthenticationFailedError()
    settings = settings_of(request)
    admin_token = settings.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return AdminPrincipal(actor="admin-token")
    if token.startswith(KEY_PREFIX):
        raise await _refuse_tenant_credential(request)
    principal = verify_admin_token(token, settings)
    if principal is not None:
        return principal
    if _tenant_shaped(request, token):
        raise await _refuse_tenant_credential(request)
    raise AuthenticationFailedError()


async def require_admin(request: Request, session: SessionDep) -> AdminPrincipal:
    """Dependency of every protected /admin route: the acting admin, role checked.

    An admin JWT's user is read again on every request (admin traffic is light): a deleted
    user's tokens get 401 at once, and the role is the user's current one, not the token's.
    """
    limiter = failure_limiter(request)
    address = admin_address(request)
    limiter.check(address)  # 429 once this client has failed too often
    try:
        principal = await _authenticate(request)
        if principal.user_id is not None:
            user = await get_user_by_id(session, principal.user_id)
            if user is None:
                raise AuthenticationFailedError()
            principal = AdminPrincipal(
                actor=f"user:{user.username}", role=user.role, user_id=user.id
            )
    except AuthenticationFailedError:
        if bearer_token(request) is not None:
            await limiter.failed(address)  # a wrong bearer, not a missing one
        raise
    if principal.role != "admin" and request.method not in READ_METHODS:
        raise PermissionDeniedError("The viewer role can only read.", code="read_only_role")
    request.state.admin = principal
    return principal


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]
