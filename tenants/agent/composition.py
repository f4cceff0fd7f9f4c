"""The composition parts of an agent spec: handoffs, guardrails and the output schema.

All checked at PUT time, so a run never meets a bad one:

- handoff entries are names (or `{"agent", "description"}`) of other agents; that they exist in
  the same tenant is checked by `tenants.agent.service` (it needs the database);
- blocked patterns are RE2 syntax (linear-time matching: a tenant's pattern can never stall a
  worker); one that RE2 refuses (a backreference, a lookaround, a syntax error) is a 422
  naming its index;
- the output schema is a JSON Schema object that the Agents SDK can make *strict* (what
  OpenAI's structured outputs require); the 422 explains the rules when it cannot.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import jsonschema
import orjson
from agents.exceptions import UserError
from agents.strict_schema import ensure_strict_json_schema
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
)

from gateway.core.json_types import JsonInteger
from gateway.core.linear_regex import check_pattern, compile_set
from gateway.core.stored import is_stored
from gateway.core.text import Label, Text
from tenants.agent.json_schema import check_json_schema

AGENT_NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"
MAX_PATTERNS = 32
MAX_GRAPH_AGENTS = 32
"""The most agents one run's handoff graph (the entry agent and all it reaches) may hold."""
MAX_PATTERN_CHARS = 1_000
MAX_SCHEMA_BYTES = 32_768

STRICT_RULES = (
    "Structured output needs a strict schema: the root is an object; every schema names its "
    "type; every object lists its properties and allows no others (leave "
    "additionalProperties out or set it to false); "
    "every property becomes required, so give an optional one a nullable type such as "
    '["string", "null"].'
)


def _one_re2_set(patterns: list[str], info: ValidationInfo) -> list[str]:
    if not is_stored(info.context):  # a stored list that fails fails when its agent is built
        compile_set(patterns)
    return patterns


def _re2_pattern(pattern: str) -> str:
    check_pattern(pattern)
    return pattern


Pattern = Annotated[
    Text, Field(min_length=1, max_length=MAX_PATTERN_CHARS), AfterValidator(_re2_pattern)
]
Patterns = Annotated[list[Pattern], Field(max_length=MAX_PATTERNS), AfterValidator(_one_re2_set)]
"""A guardrail's list: each pattern valid RE2, and all of them one RE2 set, as the run matches
them (a list that only compiled pattern by pattern failed every run of the agent)."""


class HandoffSpec(BaseModel):
    """A handoff with the description the model sees for it."""

    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str, Field(pattern=AGENT_NAME_PATTERN)]
    description: Annotated[Text, Field(max_length=1_000)] = ""


HandoffEntry = Annotated[
    Annotated[Annotated[str, Field(pattern=AGENT_NAME_PATTERN)], Tag("<name>")]
    | Annotated[HandoffSpec, Tag("<object>")],
    # An error is about the form that was sent, not both members of the union, and its
    # `param` is the request's own path (`handoffs.0`, `handoffs.0.extra`): the tags are
    # `<…>`, which error paths leave out (`gateway.core.unions.is_tag`).
    Discriminator(lambda value: "<object>" if isinstance(value, dict | HandoffSpec) else "<name>"),
]


def handoff_target(entry: str | HandoffSpec) -> str:
    """The agent name of a handoff entry."""
    return entry if isinstance(entry, str) else entry.agent


def handoff_tool_name(agent: str) -> str:
    """The tool the model calls to hand off (`transfer_to_<agent>`, '-' as '_')."""
    return "transfer_to_" + agent.replace("-", "_")


class ClassifierSpec(BaseModel):
    """A small agent that reads the input and answers `{"tripwire": bool, "reason": str}`."""

    model_config = ConfigDict(extra="forbid")

    instructions: Annotated[Text, Field(min_length=1, max_length=20_000)]
    model: Annotated[Label, Field(min_length=1, max_length=128)] | None = None
    """Default: the agent's own model."""


class InputGuardrailsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chars: Annotated[int, Field(ge=1, le=1_000_000), JsonInteger] | None = None
    blocked_patterns: Patterns = Field(default_factory=list)
    classifier: ClassifierSpec | None = None


class OutputGuardrailsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocked_patterns: Patterns = Field(default_factory=list)


class GuardrailsSpec(BaseModel):
    """Checks on the run's input (before any model call) and its final output."""

    model_config = ConfigDict(extra="forbid")

    input: InputGuardrailsSpec = Field(default_factory=InputGuardrailsSpec)
    output: OutputGuardrailsSpec = Field(default_factory=OutputGuardrailsSpec)


def _check_required_properties(node: Any, where: str) -> None:
    """Every name an object schema `required`s is one of its `properties`: strict output
    allows no other property, so such a schema could never be satisfied (the SDK's strict form
    would drop the name, and the model's answers would break the schema as stored)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_required_properties(item, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    required = node.get("required")
    if isinstance(required, list):
        properties = node.get("properties")
        known = set(properties) if isinstance(properties, dict) else set()
        missing = [name for name in required if name not in known]
        if missing:
            raise ValueError(
                f"{where or '/'} requires {', '.join(map(str, missing))}, not among its "
                f"properties. {STRICT_RULES}"
            )
    for key, value in node.items():
        if key in ("enum", "const", "default", "examples"):
            continue  # values, not schemas
        _check_required_properties(value, f"{where}/{key}")


UNSUPPORTED_KEYWORDS = (
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
)
"""JSON Schema keywords OpenAI's structured outputs do not take: a schema using one would be
refused by the upstream on every run."""
_TYPED_BY = ("type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const")


def _check_supported(node: Any, where: str) -> None:
    """Every subschema names its type (or is an `anyOf`, a `$ref`, an `enum`, a `const`),
    an object lists its `properties`, and no keyword structured output refuses is used."""
    if not isinstance(node, dict):
        return
    at = where or "/"
    for keyword in UNSUPPORTED_KEYWORDS:
        if keyword in node:
            raise ValueError(f"{at} uses `{keyword}`, which structured output does not support.")
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) > 1:
        raise ValueError(f"{at} has an `allOf` of {len(all_of)} schemas; use one schema.")
    if not any(key in node for key in _TYPED_BY):
        raise ValueError(f"{at} names no type. {STRICT_RULES}")
    kind = node.get("type")
    if (kind == "object" or (isinstance(kind, list) and "object" in kind)) and not isinstance(
        node.get("properties"), dict
    ):
        raise ValueError(f"{at} is an object without `properties`. {STRICT_RULES}")
    _check_satisfiable(node, at)
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                _check_supported(child, f"{where}/{key}/{name}")
    if isinstance(node.get("items"), dict):
        _check_supported(node["items"], f"{where}/items")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        children = node.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                _check_supported(child, f"{where}/{key}/{index}")


_BOUNDS = (
    ("minLength", "maxLength"),
    ("minimum", "maximum"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
)
_OF_TYPE = jsonschema.Draft202012Validator


def _check_satisfiable(node: dict[str, Any], at: str) -> None:
    """No subschema that no value can satisfy: an `enum` or `const` value of another type
    than the `type` beside it, or a lower bound above its upper bound (every run's answer
    would fail the schema: a 502 `invalid_model_output` each time, or the upstream's 400)."""
    kind = node.get("type")
    if isinstance(kind, str | list):
        of_type = _OF_TYPE({"type": kind})
        enum = node.get("enum")
        values: list[Any] = enum if isinstance(enum, list) else []
        if "const" in node:
            values = [*values, node["const"]]
        wrong = [value for value in values if not of_type.is_valid(value)]
        if wrong:
            raise ValueError(
                f"{at} allows only values that are not of its type {kind!r}: "
                f"{orjson.dumps(wrong[0]).decode()[:80]}."
            )
    for low, high in _BOUNDS:
        lower, upper = node.get(low), node.get(high)
        if isinstance(lower, int | float) and isinstance(upper, int | float) and lower > upper:
            raise ValueError(f"{at} has `{low}` {lower} above `{high}` {upper}: nothing fits.")


def strict_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The strict form of an output schema (what the model is sent), or ValueError saying why
    the schema cannot be used."""
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes of JSON")
    if schema.get("type") != "object":
        raise ValueError(f'the root must be {{"type": "object", ...}}. {STRICT_RULES}')
    check_json_schema(schema)
    _check_required_properties(schema, "")
    _check_supported(schema, "")
    try:
        return ensure_strict_json_schema(copy.deepcopy(schema))
    except (UserError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot be made strict ({exc}). {STRICT_RULES}") from None
