"""USD amounts in request bodies: prices and spend limits, whole micro-dollars at most.

A decimal string is exact, so one with more than 6 decimal places is refused; a JSON number is a
binary float already, so it is rounded half-even to 6 places. The JSON Schema of the type states
the same rules the validator applies (a range for numbers, a pattern for strings), so a client
generating requests from the OpenAPI document is never refused a value the schema allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from tenants.price.money import PRICE_DECIMALS, micro_to_usd

_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMALS)


def _string_pattern(maximum: int, *, positive: bool) -> str:
    """Digits and at most 6 places up to `maximum` (all nines below it, or it exactly)."""
    digits = len(str(maximum)) - 1
    nonzero = r"(?!0*\.?0*$)" if positive else ""
    places = PRICE_DECIMALS
    return rf"^{nonzero}(\d{{1,{digits}}}(\.\d{{1,{places}}})?|{maximum}(\.0{{1,{places}}})?)$"


def _canonical(amount: Decimal) -> Decimal:
    """The amount written one way whatever the client sent (`1e9`, `"1000000000.000000"`,
    `"00025"` -> 1000000000 and 25; `"0.10"` -> 0.1): at most 6 places, no trailing zeros."""
    return Decimal(micro_to_usd(int(amount.scaleb(PRICE_DECIMALS))))


@dataclass(frozen=True, slots=True)
class UsdAmount:
    """`Annotated[Decimal, UsdAmount(...)]`: a USD amount from 0 (or above it, when `positive`)
    to `maximum`, a power of 10."""

    maximum: int
    positive: bool
    description: str
    example: str

    @property
    def minimum(self) -> float:
        return float(_QUANTUM) if self.positive else 0

    @property
    def pattern(self) -> str:
        return _string_pattern(self.maximum, positive=self.positive)

    def parse(self, value: Any) -> Any:
        """Numbers rounded to micro-dollars, strings checked against the pattern."""
        if isinstance(value, bool):
            raise ValueError("a decimal string or number of USD, not a boolean")
        if isinstance(value, int | float):
            if not self.minimum <= value <= self.maximum:
                low = f"{self.minimum:.6f}".rstrip("0").rstrip(".")
                raise ValueError(f"a number of USD from {low} to {self.maximum}")
            amount = Decimal(repr(value))
            exponent = amount.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
                amount = amount.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)
            return _canonical(amount)
        if isinstance(value, str):
            # ASCII digits only: `\d` alone (and `Decimal`) would take "١٢" as 12.
            if not re.fullmatch(self.pattern, value, re.ASCII):
                lower = "above 0" if self.positive else "from 0"
                raise ValueError(
                    f"a decimal string of USD {lower} and at most {self.maximum} with at most"
                    f' {PRICE_DECIMALS} decimal places, e.g. "{self.example}"'
                )
            return _canonical(Decimal(value))
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        zero, top = Decimal(0), Decimal(self.maximum)
        exact = core_schema.decimal_schema(
            gt=zero if self.positive else None,
            ge=None if self.positive else zero,
            le=top,
            decimal_places=PRICE_DECIMALS,
        )
        return core_schema.no_info_before_validator_function(self.parse, exact)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "number", "minimum": self.minimum, "maximum": self.maximum},
                {"type": "string", "pattern": self.pattern},
            ],
            "description": self.description,
            "examples": [self.example],
        }
