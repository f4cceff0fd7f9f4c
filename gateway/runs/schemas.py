"""Request body of `POST /v1/agents/{name}/runs` (SPEC §5.1), bounded in every dimension."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGE_CHARS = 100_000
MAX_MESSAGES = 256
MAX_METADATA_KEYS = 16


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: (
        Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]
        | Annotated[list[InputMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    )
    conversation_id: Annotated[str, Field(max_length=64)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return bounded_metadata(value)

    def sdk_input(self) -> str | list[Any]:
        """The input in the form `Runner.run` takes."""
        if isinstance(self.input, str):
            return self.input
        return [{"role": m.role, "content": m.content} for m in self.input]


def bounded_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's `metadata`, checked: ≤ 16 keys of ≤ 64 characters, scalar values of ≤ 512
    characters (runs and chat completions alike)."""
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
