"""A tenant's JSON Schema (an HTTP tool's `parameters`, an agent's `output_schema`), checked at
PUT: valid against its own meta-schema, and every `$ref` resolving inside the schema itself.

A reference that points nowhere in the schema (`#/defs/missing`) would otherwise only fail
when a run validates against it; a reference to another document (`https://…`) would make
`jsonschema` fetch it at run time, past the egress guard. `LOCAL_ONLY` is the registry the
run-time validators use, so a schema stored before this check never fetches anything either.

Its regular expressions (`pattern` values, `patternProperties` names) must be RE2 patterns:
they are matched against what the model writes, in linear time (`gateway.core.linear_regex`,
installed into `jsonschema` when this module is imported, before any validator runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from gateway.core import linear_regex

linear_regex.install()

LOCAL_ONLY: Registry[Any] = Registry()
"""A registry without retrieval: only the schema's own resources resolve."""

ROOT_URI = "urn:agent-gateway:schema"
VALUE_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose values are instance data, not subschemas (a `$ref` key there is data)."""


def check_json_schema(schema: dict[str, Any]) -> None:
    """ValueError saying why `schema` cannot be used (invalid, or a `$ref` that does not
    resolve within it)."""
    if "$schema" in schema and jsonschema.validators.validator_for(schema, default=None) is None:
        raise ValueError(
            f"unknown $schema {str(schema['$schema'])[:200]!r}: name a JSON Schema draft "
            "(https://json-schema.org/draft/2020-12/schema, draft-07, …) or leave it out"
        )
    for pattern in _patterns(schema):
        try:
            linear_regex.check_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"the pattern {pattern!r} is {exc}") from None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    # The meta-schema's `format: regex` (on `pattern` and `patternProperties` names) is what
    # the walk above checked with RE2, with a clearer message; Python's `re`, which refuses
    # RE2's `\p{L}` or `\x{00e9}`, must not judge them again.
    checker = jsonschema.FormatChecker()
    checker.checkers = {**validator.FORMAT_CHECKER.checkers, "regex": (_checked_above, ())}
    meta = validator(validator.META_SCHEMA, format_checker=checker)
    error = jsonschema.exceptions.best_match(meta.iter_errors(schema))
    if error is not None:
        raise ValueError(f"not a valid JSON Schema: {error.message}")
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = LOCAL_ONLY.with_resource(ROOT_URI, resource).resolver(base_uri=ROOT_URI)
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ValueError(
                f"the reference {ref!r} does not resolve within the schema (only local "
                "references such as '#/$defs/name' are allowed)"
            ) from None


def _checked_above(instance: object) -> bool:
    return True


def _patterns(node: Any) -> Iterator[str]:
    """Every regular expression of a schema: `pattern` values, `patternProperties` names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, dict):
                yield from value
                for subschema in value.values():
                    yield from _patterns(subschema)
            elif key not in VALUE_KEYWORDS:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            elif key not in VALUE_KEYWORDS:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
