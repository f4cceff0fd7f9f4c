"""JSON scalars as the schema declares them: no coercion from strings or booleans.

pydantic's lax mode turns `"yes"` or `1` into `True`, `"7"` into `7.0` and `true` into `1`. A
body field the OpenAPI schema declares `boolean`, `number` or `integer` takes only that JSON
type here, so a client's mistake is a 422 naming the field, not a guess.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, StrictBool
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from gateway.core.stored import is_stored

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


def unique_items(items: Sequence[Hashable]) -> Sequence[Hashable]:
    """Refuse a list that names one item twice (naming the first such item)."""
    seen: set[Hashable] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{item!r} is listed twice; list each item once")
        seen.add(item)
    return items


@dataclass(frozen=True, slots=True)
class _UniqueItems:
    """Pydantic annotation of a list whose items are unique: the schema says `uniqueItems`,
    and a list naming an item twice is a 422 (a client's mistake, and the schema's rule). A
    stored row (`gateway.core.stored`) written before the rule still loads."""

    @staticmethod
    def check(items: Sequence[Hashable], info: core_schema.ValidationInfo) -> Sequence[Hashable]:
        return items if is_stored(info.context) else unique_items(items)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        rendered = handler(schema)
        rendered["uniqueItems"] = True
        return rendered


UniqueItems = _UniqueItems()
"""Metadata for `Annotated[list[str], ..., UniqueItems]`."""

__all__ = [
    "JsonBool",
    "JsonInteger",
    "JsonNumber",
    "UniqueItems",
    "json_integer",
    "json_number",
    "unique_items",
]
