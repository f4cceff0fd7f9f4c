"""Validation of what was stored under older rules.

A rule added to a request body (a duplicate refused, a URL's spaces refused) holds for what is
sent from then on. What was stored before it still loads: a version row read back is
validated with `STORED` as the pydantic context, and the rules that only guard what is sent
(`put_only`) let it through, so an upgrade never turns a working agent into a 500.
"""

from __future__ import annotations

from typing import Any

STORED: dict[str, Any] = {"stored": True}
"""The pydantic validation context of a stored row read back."""


def is_stored(context: Any) -> bool:
    """True when a validator runs on a stored row (`STORED`), not on a request."""
    return isinstance(context, dict) and context.get("stored") is True
