"""The `metadata` object clients may attach to runs, chat completions and conversations."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from gateway.core.text import (
    LABEL_FORBIDDEN,
    LABEL_PATTERN,
    LABEL_RULE,
    TEXT_FORBIDDEN,
    TEXT_PATTERN,
    TEXT_RULE,
    broken_rule,
)

MAX_METADATA_KEYS = 16

METADATA_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"maxLength": 64, "pattern": LABEL_PATTERN},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": 512, "pattern": TEXT_PATTERN},
                    {"type": "number"},
                    {"type": "boolean"},
                ]
            },
        },
        {"type": "null"},
    ],
    "description": (
        "Up to 16 keys of at most 64 characters; each value a string of at most 512 "
        "characters, a number or a boolean."
    ),
}

Metadata = Annotated[dict[str, Any] | None, WithJsonSchema(METADATA_SCHEMA)]
"""The type of a request's `metadata` field: the schema says what `bounded_metadata` checks."""


def bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's `metadata`, checked: ≤ 16 keys of ≤ 64 characters without control
    characters, scalar values of ≤ 512 characters without NUL (runs, chat completions and
    conversations alike)."""
    if value is None:
        return None
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError("metadata keys are at most 64 characters")
        broken = broken_rule(LABEL_FORBIDDEN, LABEL_RULE, key)
        if broken is not None:
            raise ValueError(f"metadata keys {broken}")
        if not isinstance(item, str | int | float | bool) or len(str(item)) > 512:
            raise ValueError("metadata values are strings, numbers or booleans (≤ 512 chars)")
        broken = broken_rule(TEXT_FORBIDDEN, TEXT_RULE, item) if isinstance(item, str) else None
        if broken is not None:
            raise ValueError(f"metadata value of {key!r}: {broken}")
    return value
