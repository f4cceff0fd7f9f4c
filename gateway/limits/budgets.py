"""The day and month windows counted again from the usage records, on every replica.

The windows of `tokens_per_day`, `spend_per_day_usd` and `spend_per_month_usd` live in Redis
(or a replica's memory), which keeps nothing on disk: a Redis restart or failover, or a
replica's restart without Redis, would start them again from zero, and with them a whole
month's spend budget. Every `GATEWAY_LIMITS_BUDGET_RECOUNT_S` each replica counts every
budgeted tenant's usage today and this month, read from the usage rollups (two queries), in
those windows again: a counter is raised to what the records say, never lowered (runs in
flight and records not yet flushed are counted by the windows alone).
"""

from __future__ import annotations

from gateway.core.background import BackgroundTasks
from gateway.core.db import Database
from gateway.limits.quotas import QuotaService
from tenants.tenant.budgets import recount_budgets


class BudgetRecount:
    """The periodic recount of one replica."""

    def __init__(self, db: Database, quotas: QuotaService, interval_s: float) -> None:
        self.db = db
        self.quotas = quotas
        self.interval_s = interval_s
        self.background = BackgroundTasks("budget-recount")

    def start(self) -> None:
        """Recount every `interval_s` (0: never)."""
        if self.interval_s > 0:
            self.background.every(self.interval_s, self._pass)

    async def one_pass(self) -> int:
        """Recount now; how many tenants had usage to count. Skipped while Redis is away (each
        window's fallback would count as a degraded check, or warn in `closed` mode): the next
        pass after it is back recounts."""
        if self.quotas.breaker.degraded:
            return 0
        async with self.db.session() as session:
            return await recount_budgets(session, self.quotas)

    async def _pass(self) -> None:
        await self.one_pass()

    async def drain(self) -> None:
        await self.background.drain()
