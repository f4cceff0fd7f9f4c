"""The `metadata` object clients may attach to runs, chat completions and conversations."""

from __future__ import annotations

from typing import Any

MAX_METADATA_KEYS = 16


def bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's `metadata`, checked: ≤ 16 keys of ≤ 64 characters, scalar values of ≤ 512
    characters (runs, chat completions and conversations alike)."""
    if value is None:
        return None
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError("metadata keys are at most 64 characters")
        if not isinstance(item, str | int | float | bool) or len(str(item)) > 512:
            raise ValueError("metadata values are strings, numbers or booleans (≤ 512 chars)")
    return value
