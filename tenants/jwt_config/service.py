"""JWT config rules: one config per tenant, issuers unique across tenants, key material
checked at PUT time, HS256 secrets generated, returned once and stored encrypted.

Every function flushes its changes; the caller's unit of work commits them together with
their audit event.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.config import Settings
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from tenants.jwt_config.keys import KeyMaterialError, jwks_keys, public_pem_key
from tenants.jwt_config.repository import JwtConfigRepository
from tenants.jwt_config.schemas import JwtConfigPut
from tenants.jwt_config.secrets import encrypt_secret, generate_secret
from tenants.models import JwtConfig
from tenants.scoping import lock_tenant, require_tenant

_PUT_ATTEMPTS = 3


def _issuer_taken(issuer: str) -> ConflictError:
    return ConflictError("Another tenant already uses this issuer.", param="issuer")


def check_key_fits_mode(body: JwtConfigPut) -> None:
    """`hs256` takes no key (the gateway generates the secret); `rs256` and `es256` take
    exactly one of `public_key` and `jwks`. 422 naming the field to add or remove."""
    if body.mode == "hs256":
        extra = "public_key" if body.public_key is not None else "jwks"
        if body.public_key is not None or body.jwks is not None:
            raise ValidationFailedError(
                f"{extra}: hs256 takes no key: the gateway generates the secret",
                param=extra,
                code="invalid_value",
            )
    elif body.public_key is None and body.jwks is None:
        raise ValidationFailedError(
            f"public_key: {body.mode} needs exactly one of public_key or jwks",
            param="public_key",
            code="invalid_value",
        )
    elif body.public_key is not None and body.jwks is not None:
        raise ValidationFailedError(
            f"jwks: {body.mode} needs exactly one of public_key or jwks",
            param="jwks",
            code="invalid_value",
        )


async def put_config(
    session: AsyncSession, settings: Settings, tenant_id: str, body: JwtConfigPut
) -> tuple[JwtConfig, str | None]:
    """Create or replace the tenant's config; returns it and the new HS256 secret, if any.

    Raises:
        NotFoundError: unknown or deleted tenant (404).
        ValidationFailedError: the key material does not fit the mode (422).
        ConflictError: the issuer belongs to another tenant (409).
    """
    check_key_fits_mode(body)
    owner = (await require_tenant(session, tenant_id)).id
    try:
        if body.public_key is not None:
            public_pem_key(body.mode, body.public_key, sent=True)
        if body.jwks is not None:
            jwks_keys(body.mode, body.jwks, sent=True)
    except KeyMaterialError as exc:
        param = "public_key" if body.public_key is not None else "jwks"
        raise ValidationFailedError(str(exc), param=param, code="invalid_value") from None
    # Concurrent PUTs of one tenant's config take turns (both inserted it, and the loser's
    # key violation was answered as an issuer conflict).
    await lock_tenant(session, owner)
    repository = JwtConfigRepository(session)
    for _ in range(_PUT_ATTEMPTS):
        holder = await repository.issuer_owner(body.issuer)
        if holder is not None and holder != owner:
            raise _issuer_taken(body.issuer)
        secret = generate_secret() if body.mode == "hs256" else None
        now = utcnow()
        config = await repository.get(owner)
        if config is None:
            config = JwtConfig(tenant_id=owner, mode=body.mode, issuer=body.issuer, created_at=now)
        config.mode = body.mode
        config.issuer = body.issuer
        config.public_key = body.public_key
        config.jwks = body.jwks
        config.secret_encrypted = encrypt_secret(secret, settings.secret_key) if secret else None
        config.updated_at = now
        repository.add(config)
        try:
            await session.flush()
        except IntegrityError:
            # Another PUT took the issuer, or created this tenant's config first: look again
            # (an update of that config now, or the 409 if the issuer is another tenant's).
            await session.rollback()
            continue
        return config, secret
    raise ConflictError("This tenant's JWT config is being changed concurrently; retry.")


async def get_config(session: AsyncSession, tenant_id: str) -> JwtConfig:
    """The tenant's config (404 if the tenant or its config is missing)."""
    tenant = await require_tenant(session, tenant_id)
    config = await JwtConfigRepository(session).get(tenant.id)
    if config is None:
        raise NotFoundError("This tenant has no JWT config.", param="tenant_id")
    return config


async def delete_config(session: AsyncSession, tenant_id: str) -> None:
    """Remove the tenant's config: its end-user tokens stop working (404 if none)."""
    config = await get_config(session, tenant_id)
    await JwtConfigRepository(session).delete(config.tenant_id)
    await session.flush()
