"""The model prices the data plane reserves spend with: the price table held in memory,
reloaded every `GATEWAY_PRICES_REFRESH_S` seconds (a price change reaches every replica's
spend reservations within that bound; the usage writer prices records from the table itself).

Bounded: one entry per price change. A failed reload keeps the prices already loaded.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from gateway.core.background import BackgroundTasks
from gateway.core.db import Database
from tenants.price.money import PICO_PER_MICRO, pico_to_micro_ceil
from tenants.price.pricing import Price, PriceBook
from tenants.price.repository import PriceRepository

logger = logging.getLogger("gateway.limits")


class PriceCache:
    """Every model's price history, from the database, refreshed in the background."""

    def __init__(self, db: Database | None, refresh_s: float) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._book = PriceBook([])
        self.tasks = BackgroundTasks("price-refresh")

    async def load(self) -> None:
        if self._db is None:
            return
        async with self._db.session() as session:
            self._book = await PriceRepository(session).book()

    async def load_or_wait(self) -> None:
        """`load()` at start-up: a database not reachable (or not migrated) yet is logged, not
        fatal; the periodic reload fills the cache once it answers (until then runs reserve
        no spend: they count as unpriced for the limits)."""
        try:
            await self.load()
        except (OSError, SQLAlchemyError) as exc:
            logger.warning("prices not loaded at start-up (%s); retrying", type(exc).__name__)

    def start(self) -> None:
        self.tasks.every(self._refresh_s, self.load)

    def at(self, model: str, when: datetime) -> Price | None:
        """The price of `model` in force at `when` (None: unpriced)."""
        return self._book.at(model, when)


def estimate_micro(price: Price | None, input_tokens: int, max_output: int) -> int:
    """An upper bound of a model call's cost in micro-dollars (rounded up): every input token
    at the dearer of the input and cached-input prices, `max_output` at the dearer of the
    output and reasoning prices."""
    if price is None:
        return 0
    pico = input_tokens * max(price.input, price.cached_input) + max_output * max(
        price.output, price.reasoning
    )
    return pico_to_micro_ceil(pico)


def cost_micro(
    price: Price | None, input_tokens: int, output_tokens: int, cached: int, reasoning: int
) -> int:
    """What a model call really cost, in micro-dollars rounded up (the spend counters never
    undercount; the usage record keeps the exact pico-dollar cost)."""
    if price is None:
        return 0
    pico = price.cost(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )
    return pico_to_micro_ceil(pico)


__all__ = ["PICO_PER_MICRO", "PriceCache", "cost_micro", "estimate_micro"]
