"""Admin credentials: the bootstrap `GATEWAY_ADMIN_TOKEN` bearer.

A tenant credential (an API key) presented on an /admin route is refused with 403, a missing or
wrong admin token with 401. Admin users with passwords and roles come later.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.core.config import settings_of
from gateway.core.errors import AuthenticationFailedError, PermissionDeniedError
from tenants.api_key.keys import KEY_PREFIX


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """Who is acting on the admin plane (recorded in audit events later)."""

    actor: str
    role: str = "admin"


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_admin(request: Request) -> AdminPrincipal:
    """Dependency of every /admin route."""
    token = bearer_token(request)
    if token is None:
        if request.headers.get("x-api-key"):
            raise PermissionDeniedError("Tenant credentials cannot use the admin API.")
        raise AuthenticationFailedError()
    admin_token = settings_of(request).admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return AdminPrincipal(actor="admin-token")
    if token.startswith(KEY_PREFIX):
        raise PermissionDeniedError("Tenant credentials cannot use the admin API.")
    raise AuthenticationFailedError()


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]
