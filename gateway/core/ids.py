"""Opaque, prefixed, time-ordered identifiers (`ten_…`, `key_…`, `agt_…`, `run_…`).

An id is the prefix, 8 base62 characters of milliseconds since the epoch, then 14 random base62
characters. Base62 in ASCII order sorts like the numbers it encodes, so ids created later
sort later: list cursors (`after=<last id>`) can order by id alone.
"""

from __future__ import annotations

import secrets
import time

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def to_base62(number: int, width: int) -> str:
    """Encode a non-negative integer in base62, left-padded with '0' to `width`."""
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars)).rjust(width, "0")


def random_base62(length: int) -> str:
    """`length` characters drawn uniformly from the base62 alphabet by a CSPRNG: one uniform
    number below 62**length, written in base62 (one draw instead of one per character)."""
    return to_base62(secrets.randbelow(62**length), length)


def new_id(prefix: str) -> str:
    """A new time-ordered id such as `ten_0Pq3…`."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{to_base62(millis, 8)}{random_base62(14)}"
