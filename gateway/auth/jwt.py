"""Resolve an end-user JWT to a Principal.

The token's unverified `iss` names the tenant's config, looked up through the per-process
`IssuerCache` (verification key built once per issuer, unknown issuers cached too). Then the
token must use exactly the tenant's algorithm (so `alg: none`, HS256 signed with an RSA public
key and any other algorithm are refused before a signature check), carry a valid signature,
`iss`, `aud` (= GATEWAY_JWT_AUDIENCE), `sub` and an `exp` not yet past (no leeway: an
expired token is refused at once, to the fraction of a second). A signer's clock ahead of ours
is forgiven up to 60 s: on `nbf` and on `iat` (when present, finite numbers not in the future:
a token is not issued later than now).
Every rejection is the same 401 as a bad API key.

JWT principals carry the scopes `runs` and `conversations`: end users run agents and hold
conversations; the tenant-wide usage report (`usage`) is for the tenant's own API keys.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jose import JWTError, jwt

from gateway.auth.cache import NO_TENANT, TenantIndexedCache
from gateway.auth.principal import Principal
from gateway.core.db import Database
from gateway.core.errors import AuthenticationFailedError
from tenants.jwt_config.keys import ALGORITHMS, hmac_key, jwks_keys, jwks_kids, public_pem_key
from tenants.jwt_config.repository import JwtConfigRepository
from tenants.jwt_config.secrets import SecretUnreadableError, decrypt_secret
from tenants.models import JwtConfig

logger = logging.getLogger("gateway.auth")

MAX_TOKEN_BYTES = 8192
MAX_ISSUER_CHARS = 512
MAX_SUBJECT_CHARS = 256
LEEWAY_S = 60
JWT_SCOPES = frozenset({"runs", "conversations"})
_OPTIONS = {
    "require_aud": True,
    "require_iss": True,
    "require_sub": True,
    "require_exp": True,
    "verify_nbf": False,  # checked below, with the leeway that `exp` does not get
}


@dataclass(frozen=True, slots=True)
class IssuerEntry:
    """A tenant's verification key for one issuer (tenant_id empty: unknown issuer)."""

    tenant_id: str
    tenant_slug: str = ""
    tenant_status: str = ""
    limits: dict[str, Any] | None = None
    algorithm: str = ""
    key: Any = None
    kids: tuple[str | None, ...] = ()
    """With a JWKS: each key's `kid` (None when it has none), in the order of `key`."""


_UNKNOWN = IssuerEntry(tenant_id=NO_TENANT)


class IssuerCache(TenantIndexedCache[IssuerEntry]):
    """Issuer -> verification entry, trusted for at most `ttl_s` without a DB read."""


def _fail() -> AuthenticationFailedError:
    return AuthenticationFailedError()


def unverified_issuer(token: str) -> tuple[str, str, str | None]:
    """(alg, iss, kid) of a token before verification; 401 when it is not a sane JWT."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _fail()
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.get_unverified_claims(token)
    except JWTError:
        raise _fail() from None
    alg, iss = header.get("alg"), claims.get("iss")
    if not isinstance(alg, str) or not isinstance(iss, str):
        raise _fail()
    if "crit" in header:  # RFC 7515 4.1.11: no extension is understood here, so refuse
        raise _fail()
    if not 1 <= len(iss) <= MAX_ISSUER_CHARS or not iss.isprintable():
        raise _fail()  # an issuer with NUL or a control character is never looked up
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail()
    return alg, iss, kid


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """The claim as a finite number of seconds, or None (absent, or not a NumericDate)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer of hundreds of digits: no float, no date
        return None
    return seconds if math.isfinite(seconds) else None


async def resolve_jwt(
    token: str,
    *,
    audience: str,
    secret_key: str | Sequence[str],
    cache: IssuerCache,
    db: Database,
) -> Principal:
    """The principal (tenant + end user) of a valid end-user JWT; else 401."""
    alg, iss, kid = unverified_issuer(token)
    entry = await cache.get_or_load(iss, lambda: _load(iss, db, secret_key))
    if not entry.tenant_id or alg != entry.algorithm:
        raise _fail()
    key = entry.key
    if kid is not None and any(k is not None for k in entry.kids):
        # A JWKS whose keys are named: a token naming one is checked with that key only (RFC
        # 7515 4.1.4), and one naming no key of the set is refused.
        key = [each for each, named in zip(entry.key, entry.kids, strict=True) if named == kid]
        if not key:
            raise _fail()
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[entry.algorithm],
            audience=audience,
            issuer=iss,
            options=_OPTIONS,
        )
    except (JWTError, OverflowError, TypeError, ValueError):
        # python-jose converts `exp`/`iat` with int(): null, Infinity or 1e400 raise there.
        raise _fail() from None
    now = time.time()
    # NumericDates are finite JSON numbers (python-jose takes "123" and lets NaN or null
    # `nbf` through). `exp` is compared exactly: python-jose truncates both sides to whole
    # seconds, which accepts a token for up to a second past its `exp`.
    exp = _numeric_date(claims, "exp")
    if exp is None or now >= exp:
        raise _fail()
    for name in ("iat", "nbf"):  # a signer's clock ahead of ours is forgiven up to 60 s
        if name in claims:
            value = _numeric_date(claims, name)
            if value is None or value > now + LEEWAY_S:
                raise _fail()
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUBJECT_CHARS:
        raise _fail()
    if not sub.isprintable():  # NUL and other control characters never reach the usage table
        raise _fail()
    return Principal(
        tenant_id=entry.tenant_id,
        tenant_slug=entry.tenant_slug,
        tenant_status=entry.tenant_status,
        key_id=None,
        scopes=JWT_SCOPES,
        limits=entry.limits,
        user=sub,
    )


async def _load(issuer: str, db: Database, secret_key: str | Sequence[str]) -> IssuerEntry:
    async with db.session() as session:
        found = await JwtConfigRepository(session).get_with_tenant_by_issuer(issuer)
    if found is None:
        return _UNKNOWN
    config, tenant = found
    if tenant.deleted_at is not None:
        return _UNKNOWN
    try:
        key = _verification_key(config, secret_key)
        kids = jwks_kids(config.jwks) if config.mode != "hs256" and config.jwks else ()
    except (SecretUnreadableError, ValueError) as exc:
        logger.error("JWT config of tenant %s is unusable: %s", tenant.slug, exc)
        return _UNKNOWN
    return IssuerEntry(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        tenant_status=tenant.status,
        limits=tenant.limits,
        algorithm=ALGORITHMS[config.mode],
        key=key,
        kids=kids,
    )


def _verification_key(config: JwtConfig, secret_key: str | Sequence[str]) -> Any:
    if config.mode == "hs256":
        if config.secret_encrypted is None:
            raise ValueError("hs256 config without a secret")
        return hmac_key(decrypt_secret(config.secret_encrypted, secret_key))
    if config.jwks is not None:
        return jwks_keys(config.mode, config.jwks)
    if config.public_key is None:
        raise ValueError(f"{config.mode} config without a key")
    return public_pem_key(config.mode, config.public_key)
