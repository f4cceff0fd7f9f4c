"""Structured output: an agent's `output_schema` as the SDK's output type.

The model is sent the strict form of the schema (what OpenAI's structured outputs require;
the control plane refused at PUT any schema that cannot be made strict) and its answer is
parsed and validated against it here: an answer that is not JSON or does not follow the
schema raises `InvalidModelOutput`, which fails the run with 502 `invalid_model_output`.
"""

from __future__ import annotations

from typing import Any

import orjson
from agents import AgentOutputSchemaBase
from agents.exceptions import ModelBehaviorError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from tenants.agent.json_schema import LOCAL_ONLY

MAX_DETAIL_CHARS = 300


class InvalidModelOutput(ModelBehaviorError):
    """The model's final answer does not follow the agent's output schema."""


class JsonSchemaOutput(AgentOutputSchemaBase):
    """An output type defined by a (strict) JSON Schema; the output is the parsed object."""

    def __init__(self, strict_schema: dict[str, Any]) -> None:
        self._schema = strict_schema
        self._validator = Draft202012Validator(strict_schema, registry=LOCAL_ONLY)

    def is_plain_text(self) -> bool:
        return False

    def name(self) -> str:
        return "final_output"

    def json_schema(self) -> dict[str, Any]:
        return self._schema

    def is_strict_json_schema(self) -> bool:
        return True

    def validate_json(self, json_str: str) -> Any:
        try:
            value = orjson.loads(json_str)
        except orjson.JSONDecodeError:
            raise InvalidModelOutput("the answer is not JSON") from None
        try:
            error = best_match(self._validator.iter_errors(value))
        except Unresolvable:  # a schema stored before the PUT check refused such references
            raise InvalidModelOutput("the output schema has a $ref that does not resolve") from None
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "the root"
            detail = f"at {where}: {error.message}"[:MAX_DETAIL_CHARS]
            raise InvalidModelOutput(f"the answer does not follow the output schema ({detail})")
        return value
