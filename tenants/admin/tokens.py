"""Admin JWTs: issued by `POST /admin/login`, HS256 under a key derived from
GATEWAY_SECRET_KEY, with an audience tenant JWTs never carry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from jose import JWTError, jwt

from gateway.core.config import Settings

ADMIN_AUDIENCE = "agent-gateway-admin"
ADMIN_ISSUER = "agent-gateway"
ALGORITHMS = ["HS256"]
ROLES = ("admin", "viewer")


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """Who is acting on the admin plane (the audit log's `actor`)."""

    actor: str
    role: str = "admin"
    user_id: str | None = None
    """The admin user of an admin JWT (None for the bootstrap token)."""


def _signing_key(settings: Settings, secret_key: str | None = None) -> str:
    # A derived key keeps admin tokens and API key hashes in separate domains.
    key = secret_key or settings.secret_key
    return hmac.new(key.encode(), b"admin-jwt-v1", hashlib.sha256).hexdigest()


def issue_admin_token(
    settings: Settings, *, user_id: str, username: str, role: str
) -> tuple[str, int]:
    """A signed admin JWT and its lifetime in seconds."""
    now = int(time.time())
    ttl = settings.admin_jwt_ttl_s
    claims = {
        "iss": ADMIN_ISSUER,
        "aud": ADMIN_AUDIENCE,
        "sub": user_id,
        "name": username,
        "role": role,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, _signing_key(settings), algorithm="HS256"), ttl


def verify_admin_token(token: str, settings: Settings) -> AdminPrincipal | None:
    """The admin of a valid admin JWT; None for anything else (expired, forged, tenant JWT).
    During a secret-key rotation, tokens signed under an old key stay valid until they expire."""
    if len(token) > 4096:
        return None
    claims = None
    for secret_key in settings.secret_keys:
        try:
            claims = jwt.decode(
                token,
                _signing_key(settings, secret_key),
                algorithms=ALGORITHMS,
                audience=ADMIN_AUDIENCE,
                issuer=ADMIN_ISSUER,
                options={"require_exp": True, "require_sub": True, "require_aud": True},
            )
            break
        except JWTError:
            continue
    if claims is None:
        return None
    # python-jose compares `exp` in whole seconds (a token passes for up to a second past it):
    # compared exactly here, as end-user JWTs are (no leeway).
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or time.time() >= exp:
        return None
    role, name, user_id = claims.get("role"), claims.get("name"), claims.get("sub")
    if role not in ROLES or not isinstance(name, str) or not isinstance(user_id, str):
        return None
    return AdminPrincipal(actor=f"user:{name}", role=role, user_id=user_id)


def looks_like_tenant_jwt(token: str, tenant_audience: str) -> bool:
    """Whether an unverified JWT is addressed to the tenant audience (a tenant credential)."""
    if len(token) > 8192 or token.count(".") != 2:
        return False
    try:
        aud = jwt.get_unverified_claims(token).get("aud")
    except JWTError:
        return False
    return aud == tenant_audience or (isinstance(aud, list) and tenant_audience in aud)
