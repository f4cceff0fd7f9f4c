"""`gateway secrets re-encrypt`: every stored secret moved under the current GATEWAY_SECRET_KEY.

During a rotation the old keys (GATEWAY_SECRET_KEY_OLD) still decrypt what was stored under
them (`tenants.secretbox`); this rewrites each encrypted column still under an old key under the
current one, so the old keys can then be removed. Idempotent: a secret already under the
current key is left as it is (counted `current`), so a second run re-encrypts nothing.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.config import Settings
from tenants.jwt_config.secrets import PURPOSE as JWT_PURPOSE
from tenants.models import JwtConfig, TenantUpstream, ToolSecret
from tenants.secretbox import SecretUnreadableError, reseal, unseal
from tenants.tool_secret.service import PURPOSE as TOOL_PURPOSE
from tenants.upstream.service import PURPOSE as UPSTREAM_PURPOSE

ENCRYPTED: tuple[tuple[Any, str, str], ...] = (
    (JwtConfig, "secret_encrypted", JWT_PURPOSE),
    (ToolSecret, "secret_encrypted", TOOL_PURPOSE),
    (ToolSecret, "previous_encrypted", TOOL_PURPOSE),
    (TenantUpstream, "api_key_encrypted", UPSTREAM_PURPOSE),
)
"""Every encrypted column: (table, column, purpose). A new one must be listed here."""


async def reencrypt_all(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Re-encrypt every stored secret (all tenants) still under an old key under the current
    one and flush; the counts of secrets re-encrypted, of those already under the current key
    and of those no configured key can read."""
    counts = {"reencrypted": 0, "current": 0, "unreadable": 0}
    current = settings.secret_keys[0]
    for model, column, purpose in ENCRYPTED:
        rows = await session.exec(select(model).where(col(getattr(model, column)).is_not(None)))
        for row in rows.all():
            try:
                unseal(getattr(row, column), current, purpose)
                counts["current"] += 1
                continue
            except SecretUnreadableError:
                pass
            try:
                setattr(row, column, reseal(getattr(row, column), settings.secret_keys, purpose))
            except SecretUnreadableError:
                counts["unreadable"] += 1
                continue
            session.add(row)
            counts["reencrypted"] += 1
    await session.flush()
    return counts
