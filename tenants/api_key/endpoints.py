"""`/admin/tenants/{tenant_id}/keys` routes: thin wrappers over `tenants.api_key.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from tenants.api_key import service
from tenants.api_key.schemas import KeyCreate, KeyCreated, KeyPublic, key_created, key_public
from tenants.pagination import ListBody, PageDep

router = APIRouter(prefix="/tenants/{tenant_id}/keys")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def issue_key(
    tenant_id: str, body: KeyCreate, session: SessionDep, settings: SettingsDep
) -> KeyCreated:
    """Issue a key; the plaintext `key` is in this response and never again."""
    key, plaintext = await service.issue_key(session, settings, tenant_id, body)
    return key_created(key, plaintext)


@router.get("", response_model=ListBody[KeyPublic])
async def list_keys(tenant_id: str, session: SessionDep, page: PageDep) -> dict[str, Any]:
    """The tenant's keys, shown as `prefix…last4` (revoked ones carry `revoked_at`)."""
    return (await service.list_keys(session, tenant_id, page)).render(key_public)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(tenant_id: str, key_id: str, session: SessionDep) -> Response:
    """Revoke a key (idempotent)."""
    await service.revoke_key(session, tenant_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
