"""Price changes: validated, appended (never updated), effective now or later."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import as_utc, utcnow
from gateway.core.errors import NotFoundError, ValidationFailedError
from tenants.models import ModelPrice
from tenants.price.money import price_to_pico
from tenants.price.repository import PriceRepository
from tenants.price.schemas import PricePut

# A little slack for the admin's clock and the request's transit: `effective_at` a few
# seconds in the past is taken as now.
PAST_SLACK_S = 5.0


async def put_price(session: AsyncSession, model: str, body: PricePut) -> ModelPrice:
    """Append the model's new price (flushed; the caller's unit of work commits it with its
    audit event)."""
    now = utcnow()
    effective = now if body.effective_at is None else as_utc(body.effective_at)
    if (now - effective).total_seconds() > PAST_SLACK_S:
        raise ValidationFailedError(
            "effective_at: must not be in the past (a price change never reprices past runs).",
            param="effective_at",
            code="invalid_value",
        )
    row = ModelPrice(
        model=model,
        effective_at=max(effective, now),
        priced=True,
        input_pico=price_to_pico(body.input_per_mtok),
        cached_input_pico=_pico(body.cached_input_per_mtok),
        output_pico=price_to_pico(body.output_per_mtok),
        reasoning_pico=_pico(body.reasoning_per_mtok),
        created_at=now,
    )
    PriceRepository(session).add(row)
    await session.flush()
    return row


async def remove_price(session: AsyncSession, model: str) -> None:
    """From now on the model is unpriced (runs before keep their price): the price in force
    ends now and scheduled changes are cancelled; 404 if it has neither."""
    now = utcnow()
    repository = PriceRepository(session)
    current = {row.model: row for row in await repository.in_force(now)}
    priced_now = model in current and current[model].priced
    cancelled = await repository.drop_scheduled(model, now)
    if not priced_now and not cancelled:
        raise NotFoundError(f"Model '{model}' has no price.", code="price_not_found")
    if priced_now:
        repository.add(ModelPrice(model=model, effective_at=now, priced=False, created_at=now))
    await session.flush()


async def current_price(session: AsyncSession, model: str) -> ModelPrice:
    """The price in force now; 404 when the model has none."""
    current = {row.model: row for row in await PriceRepository(session).in_force(utcnow())}
    row = current.get(model)
    if row is None or not row.priced:
        raise NotFoundError(f"Model '{model}' has no price.", code="price_not_found")
    return row


def _pico(value: Decimal | None) -> int | None:
    return None if value is None else price_to_pico(value)
