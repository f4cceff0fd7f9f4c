"""Tool-signing secret rules: `rotate` creates the tenant's first secret or replaces it; the
replaced secret keeps signing (a second `v1=` in the signature header) for 24 hours, so a
receiver can switch to the new secret without dropping calls.

Every function flushes its changes; the caller's unit of work commits them together with
their audit event.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import as_utc, utcnow
from gateway.core.errors import NotFoundError
from tenants.models import ToolSecret
from tenants.scoping import require_tenant
from tenants.secretbox import seal, unseal
from tenants.tool_secret.repository import ToolSecretRepository

PURPOSE = "tool-signing-secret-v1"
PREFIX = "whsec_"
ROTATION_GRACE = timedelta(hours=24)
"""How long the previous secret keeps signing after a rotation."""


def generate_secret() -> str:
    """A new secret: `whsec_` and 32 random bytes in URL-safe base64 (49 characters)."""
    return PREFIX + secrets.token_urlsafe(32)


async def rotate(
    session: AsyncSession, secret_key: str, tenant_id: str
) -> tuple[ToolSecret, str, bool]:
    """Create or rotate the tenant's secret: the row, the new plaintext (shown once) and
    whether it was created (no secret before)."""
    owner = (await require_tenant(session, tenant_id)).id
    repository = ToolSecretRepository(session)
    secret = generate_secret()
    now = utcnow()
    row = await repository.get(owner)
    created = row is None
    if row is None:
        row = ToolSecret(tenant_id=owner, secret_encrypted="", created_at=now)
    else:
        row.previous_encrypted = row.secret_encrypted
        row.previous_expires_at = now + ROTATION_GRACE
        row.rotated_at = now
    row.secret_encrypted = seal(secret, secret_key, PURPOSE)
    repository.add(row)
    await session.flush()
    return row, secret, created


async def get_status(session: AsyncSession, tenant_id: str) -> ToolSecret:
    """The tenant's secret row (404 if the tenant has none yet)."""
    owner = (await require_tenant(session, tenant_id)).id
    row = await ToolSecretRepository(session).get(owner)
    if row is None:
        raise NotFoundError("This tenant has no tool-signing secret yet.", param="tenant_id")
    return row


def signing_secrets(
    row: ToolSecret | None, secret_key: str | Sequence[str], now: datetime
) -> tuple[str, ...]:
    """The plaintext secrets that sign a call now: the current one, then the previous one
    while its grace period lasts."""
    if row is None:
        return ()
    current = unseal(row.secret_encrypted, secret_key, PURPOSE)
    if row.previous_encrypted is None or row.previous_expires_at is None:
        return (current,)
    if as_utc(row.previous_expires_at) <= now:
        return (current,)
    return (current, unseal(row.previous_encrypted, secret_key, PURPOSE))
