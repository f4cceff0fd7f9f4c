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
    return _fixed(pico, PRICE_DECIMALS)


def usd(pico: int) -> str:
    """A cost in pico-dollars as an exact USD decimal string (`"0.00001545"`, `"0"`)."""
    return _fixed(pico, 12)


def usd_to_micro(amount: Decimal) -> int:
    """A USD amount (a spend limit) in whole micro-dollars, rounded down."""
    return int(amount.scaleb(6))


def pico_to_micro_ceil(pico: int) -> int:
    """Pico-dollars -> micro-dollars, rounded up (a spend counter never undercounts)."""
    return -(-pico // PICO_PER_MICRO)


def micro_to_usd(micro: int) -> str:
    return _fixed(micro, 6)


def _fixed(units: int, decimals: int) -> str:
    """`units` x 10^-decimals as a plain decimal string without trailing zeros (integer
    arithmetic only: a report renders thousands of these)."""
    whole, frac = divmod(abs(units), 10**decimals)
    sign = "-" if units < 0 else ""
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:0{decimals}d}".rstrip("0")
