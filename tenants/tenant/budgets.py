"""A budget set on a tenant holds what the tenant already used in its window.

The day and month windows (`tokens_per_day`, `spend_per_day_usd`, `spend_per_month_usd`) are
counted by the data plane only while such a limit applies. When a PATCH sets one, the
tenant's usage today and this month, read from the usage rollups, is counted in its windows
once the change commits (`BudgetWindows.seed`, which never lowers a counter). What it cannot
see: runs in flight and records not yet flushed (`GATEWAY_USAGE_FLUSH_INTERVAL_S`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.db import after_commit
from tenants.models import Tenant
from tenants.price.money import pico_to_micro_ceil
from tenants.tenant.schemas import TenantUpdate
from tenants.usage.repository import UsageRepository

BUDGET_FIELDS = ("tokens_per_day", "spend_per_day_usd", "spend_per_month_usd")


class BudgetWindows(Protocol):
    """The data plane's day and month windows of a tenant."""

    async def seed(
        self, tenant_id: str, *, tokens_today: int, spent_today: int, spent_month: int
    ) -> None: ...


def sets_a_budget(body: TenantUpdate) -> bool:
    """True when the PATCH gives a day or month limit a value."""
    if body.limits is None:
        return False
    sent = body.limits.model_dump(exclude_unset=True)
    return any(sent.get(name) is not None for name in BUDGET_FIELDS)


def has_a_budget(limits: Mapping[str, Any] | None) -> bool:
    """True when stored tenant limits give a day or month window a value."""
    return limits is not None and any(limits.get(name) is not None for name in BUDGET_FIELDS)


async def recount_budgets(session: AsyncSession, windows: BudgetWindows) -> int:
    """Count every budgeted tenant's usage today and this month (the rollups) in its day and
    month windows again (never lowering a counter): windows that lost their counts (a Redis
    restart or failover, a replica's memory after a restart) hold what the records say again.
    Returns how many tenants were counted."""
    today = utcnow().date()
    statement = select(Tenant.id, Tenant.limits).where(col(Tenant.deleted_at).is_(None))
    budgeted = [
        tenant_id
        for tenant_id, limits in (await session.exec(statement)).all()
        if has_a_budget(limits)
    ]
    totals = await UsageRepository(session).window_totals_of(budgeted, today)
    for tenant_id, (tokens, spent_today, spent_month) in totals.items():
        await windows.seed(
            tenant_id,
            tokens_today=tokens,
            spent_today=pico_to_micro_ceil(spent_today),
            spent_month=pico_to_micro_ceil(spent_month),
        )
    return len(totals)


async def count_past_usage(session: AsyncSession, tenant_id: str, windows: BudgetWindows) -> None:
    """Once the unit commits, count the tenant's usage so far in its day and month windows."""
    tokens, spent_today, spent_month = await UsageRepository(session).window_totals(
        tenant_id, utcnow().date()
    )
    after_commit(
        session,
        partial(
            windows.seed,
            tenant_id,
            tokens_today=tokens,
            spent_today=pico_to_micro_ceil(spent_today),
            spent_month=pico_to_micro_ceil(spent_month),
        ),
    )
