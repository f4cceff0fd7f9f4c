"""Every query on the `model_prices` table (prices are global, not tenant-owned)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import as_utc
from tenants.models import ModelPrice
from tenants.price.pricing import PriceBook


class PriceRepository:
    """Appends price changes and reads the history within the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: ModelPrice) -> None:
        self.session.add(row)

    async def drop_scheduled(self, model: str, after: datetime) -> int:
        """Delete the model's price changes that take effect after `after` (scheduled, never
        applied to a run); how many there were."""
        statement = select(ModelPrice).where(
            ModelPrice.model == model, col(ModelPrice.effective_at) > after
        )
        rows = list((await self.session.exec(statement)).all())
        for row in rows:
            await self.session.delete(row)
        return len(rows)

    async def history(self, model: str | None = None) -> list[ModelPrice]:
        """Every price change (of one model), oldest first."""
        statement = select(ModelPrice)
        if model is not None:
            statement = statement.where(ModelPrice.model == model)
        statement = statement.order_by(col(ModelPrice.effective_at), col(ModelPrice.id))
        return list((await self.session.exec(statement)).all())

    async def book(self) -> PriceBook:
        """The whole price history, to price records by the time they ran (a small table:
        one row per price change)."""
        return PriceBook(await self.history())

    async def in_force(self, at: datetime) -> list[ModelPrice]:
        """Each model's latest row in force at `at`, by model name (removed prices included,
        `priced` false)."""
        current: dict[str, ModelPrice] = {}
        for row in await self.history():
            if as_utc(row.effective_at) <= at:
                current[row.model] = row
        return [current[name] for name in sorted(current)]
