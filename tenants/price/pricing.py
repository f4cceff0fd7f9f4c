"""The cost of a run under a price: `Price` (one model's prices) and `PriceBook` (the price
history of every model, to price a run with the price in force when it started).

Input tokens include the cached ones and output tokens include the reasoning ones (the
upstream's accounting), so a run costs
`(input - cached) x input + cached x cached_input + (output - reasoning) x output
+ reasoning x reasoning`, where `cached_input` defaults to `input` and `reasoning` to
`output`. All integers (pico-dollars per token), so the cost is exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.core.clock import as_utc
from tenants.models import ModelPrice


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices, in pico-dollars per token."""

    input: int
    cached_input: int
    output: int
    reasoning: int

    @classmethod
    def of(cls, row: ModelPrice) -> Price:
        return cls(
            input=row.input_pico,
            cached_input=row.input_pico if row.cached_input_pico is None else row.cached_input_pico,
            output=row.output_pico,
            reasoning=row.output_pico if row.reasoning_pico is None else row.reasoning_pico,
        )

    def cost(
        self, *, input_tokens: int, output_tokens: int, cached_tokens: int, reasoning_tokens: int
    ) -> int:
        """The exact cost in pico-dollars."""
        cached = min(max(cached_tokens, 0), max(input_tokens, 0))
        reasoning = min(max(reasoning_tokens, 0), max(output_tokens, 0))
        return (
            (max(input_tokens, 0) - cached) * self.input
            + cached * self.cached_input
            + (max(output_tokens, 0) - reasoning) * self.output
            + reasoning * self.reasoning
        )


class PriceBook:
    """Every model's price history; `at(model, when)` is the price in force then."""

    def __init__(self, rows: Iterable[ModelPrice]) -> None:
        history: dict[str, list[tuple[datetime, Price | None]]] = {}
        ordered = sorted(rows, key=lambda r: (r.model, as_utc(r.effective_at), r.id or 0))
        for row in ordered:
            history.setdefault(row.model, []).append(
                (as_utc(row.effective_at), Price.of(row) if row.priced else None)
            )
        self._history = history
        self._times = {model: [t for t, _ in items] for model, items in history.items()}

    def at(self, model: str, when: datetime) -> Price | None:
        """The price of `model` in force at `when` (None: unpriced then)."""
        times = self._times.get(model)
        if not times:
            return None
        index = bisect.bisect_right(times, as_utc(when)) - 1
        return None if index < 0 else self._history[model][index][1]
