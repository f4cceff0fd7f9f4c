"""JSON scalars as the schema declares them: no coercion from strings or booleans.

pydantic's lax mode turns `"yes"` or `1` into `True`, `"7"` into `7.0` and `true` into `1`. A
body field the OpenAPI schema declares `boolean`, `number` or `integer` takes only that JSON
type here, so a client's mistake is a 422 naming the field, not a guess.
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator, StrictBool

JsonBool = StrictBool
"""`true` or `false` only."""


def json_number(value: Any) -> Any:
    """A JSON number only: not a boolean, not a numeric string (the schema says `number`)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("Input should be a number")
    return value


def json_integer(value: Any) -> Any:
    """A JSON integer only (`5.0` is one; `true` and `"5"` are not)."""
    value = json_number(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("Input should be an integer")
        return int(value)
    return value


JsonNumber = BeforeValidator(json_number)
"""Metadata for `Annotated[float, ..., JsonNumber]`."""
JsonInteger = BeforeValidator(json_integer)
"""Metadata for `Annotated[int, ..., JsonInteger]`."""

__all__ = ["JsonBool", "JsonInteger", "JsonNumber", "json_integer", "json_number"]
