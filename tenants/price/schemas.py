"""Bodies of the price routes: `PUT /admin/models/{model}/price` and what the reads answer."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from gateway.core.clock import UtcDatetime, rfc3339
from tenants.models import ModelPrice
from tenants.price.amounts import UsdAmount
from tenants.price.money import MAX_PRICE_PER_MTOK, pico_to_per_mtok

MODEL_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/][^\x00-\x1f\x7f-\x9f]{0,127}$"
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)
]
PerMtok = Annotated[
    Decimal,
    UsdAmount(
        maximum=int(MAX_PRICE_PER_MTOK),
        positive=False,
        description=(
            "USD per million tokens: a decimal string (exact, at most 6 decimal places) or a"
            " number (rounded half-even to 6 places)."
        ),
        example="0.40",
    ),
]


class PricePut(BaseModel):
    """`PUT /admin/models/{model}/price`: the model's price from `effective_at` on."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: PerMtok
    cached_input_per_mtok: PerMtok | None = None
    """Cached input tokens (null: the input price)."""
    output_per_mtok: PerMtok
    reasoning_per_mtok: PerMtok | None = None
    """Reasoning tokens, a part of the output tokens (null: the output price)."""
    effective_at: UtcDatetime | None = None
    """From when the price applies: now (the default) or later, never in the past (a price
    change never reprices runs already made)."""


class PricePublic(BaseModel):
    """A model's price as stored; `priced: false` marks a removed price (a tombstone)."""

    model: str
    priced: bool
    input_per_mtok: str | None
    cached_input_per_mtok: str | None
    output_per_mtok: str | None
    reasoning_per_mtok: str | None
    effective_at: str
    created_at: str


def _or_none(pico: int | None, priced: bool) -> str | None:
    return None if pico is None or not priced else pico_to_per_mtok(pico)


def price_public(row: ModelPrice) -> PricePublic:
    return PricePublic(
        model=row.model,
        priced=row.priced,
        input_per_mtok=_or_none(row.input_pico, row.priced),
        cached_input_per_mtok=_or_none(row.cached_input_pico, row.priced),
        output_per_mtok=_or_none(row.output_pico, row.priced),
        reasoning_per_mtok=_or_none(row.reasoning_pico, row.priced),
        effective_at=rfc3339(row.effective_at) or "",
        created_at=rfc3339(row.created_at) or "",
    )


__all__ = ["MODEL_NAME_PATTERN", "PricePublic", "PricePut", "datetime", "price_public"]
