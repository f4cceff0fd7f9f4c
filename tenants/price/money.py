"""Exact money: prices and costs are integers, never floats.

A price is given in USD per million tokens as a decimal with at most 6 decimal places, and
stored as an integer number of micro-dollars per million tokens, which is the same number as
pico-dollars (1e-12 USD) per token. A record's cost is then an exact integer of pico-dollars
(tokens x pico per token), sums of costs are exact, and rendering divides by 10^12 exactly.
"""

from __future__ import annotations

from decimal import Decimal

PICO_PER_USD = 10**12
PICO_PER_MICRO = 10**6
PRICE_DECIMALS = 6
MAX_PRICE_PER_MTOK = Decimal(1_000_000)


def price_to_pico(per_mtok: Decimal) -> int:
    """USD per million tokens -> pico-dollars per token (exact; the caller validated the
    number of decimal places)."""
    return int(per_mtok.scaleb(PRICE_DECIMALS))


def pico_to_per_mtok(pico: int) -> str:
    """Pico-dollars per token -> the USD-per-million-tokens decimal string an admin wrote."""
    return _plain(Decimal(pico).scaleb(-PRICE_DECIMALS))


def usd(pico: int) -> str:
    """A cost in pico-dollars as an exact USD decimal string (`"0.00001545"`, `"0"`)."""
    return _plain(Decimal(pico).scaleb(-12))


def usd_to_micro(amount: Decimal) -> int:
    """A USD amount (a spend limit) in whole micro-dollars, rounded down."""
    return int(amount.scaleb(6))


def pico_to_micro_ceil(pico: int) -> int:
    """Pico-dollars -> micro-dollars, rounded up (a spend counter never undercounts)."""
    return -(-pico // PICO_PER_MICRO)


def micro_to_usd(micro: int) -> str:
    return _plain(Decimal(micro).scaleb(-6))


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"
