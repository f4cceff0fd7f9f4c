"""What an admin mutation needs after its service: the audit event, in the request's unit of
work with the change (one transaction), then a cache invalidation on every replica once that
unit has committed.

The control plane does not import the data plane: the app state's `invalidation` (the gateway's
Redis pub/sub publisher) is reached through the `ChangeNotifier` protocol. Changes made outside
the app (the CLI) notify nobody: there the caches' TTL is the bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.db import SessionDep, after_commit
from gateway.core.state import app_state
from tenants.admin.auth import AdminDep, AdminPrincipal
from tenants.audit.service import record_event


class ChangeNotifier(Protocol):
    """Drops cached credentials, JWT configs and agent versions of a tenant everywhere."""

    async def tenant_changed(self, tenant_id: str) -> None: ...


@dataclass(slots=True)
class AdminContext:
    """The acting admin, the request's session and id, and the change notifier."""

    admin: AdminPrincipal
    session: AsyncSession
    request_id: str | None
    notifier: ChangeNotifier

    async def done(
        self,
        action: str,
        target_type: str,
        target_id: str | None,
        *,
        tenant_id: str | None = None,
        details: dict[str, Any] | None = None,
        invalidate: bool = True,
    ) -> None:
        """Record the change's audit event in the same unit of work (the unit commits both or
        neither), and invalidate the tenant's caches everywhere once it has committed (what
        makes a revocation bite; after the commit, so no replica reloads the old state; before
        the response is sent). Never pass secrets in `details`."""
        await record_event(
            self.session,
            actor=self.admin.actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            tenant_id=tenant_id,
            request_id=self.request_id,
            details=details,
        )
        if invalidate and tenant_id is not None:
            after_commit(self.session, partial(self.notifier.tenant_changed, tenant_id))


async def admin_context(request: Request, admin: AdminDep, session: SessionDep) -> AdminContext:
    """Dependency: the context of one admin mutation."""
    notifier: ChangeNotifier = app_state(request).invalidation
    request_id: str | None = getattr(request.state, "request_id", None)
    return AdminContext(admin=admin, session=session, request_id=request_id, notifier=notifier)


AdminContextDep = Annotated[AdminContext, Depends(admin_context)]
