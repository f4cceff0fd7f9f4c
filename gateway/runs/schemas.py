"""Request body of `POST /v1/agents/{name}/runs` and of a WebSocket turn, bounded
in every dimension."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from gateway.core.json_types import JsonBool
from gateway.core.metadata import Metadata, bounded_metadata
from gateway.core.text import Label, Text
from gateway.core.unions import LIST, TEXT, text_or_list

MAX_MESSAGE_CHARS = 100_000
MAX_MESSAGES = 256


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: Annotated[Text, Field(max_length=MAX_MESSAGE_CHARS)]


class TurnInput(BaseModel):
    """One turn's input: what a run request and a WebSocket message have in common."""

    model_config = ConfigDict(extra="forbid")

    input: Annotated[
        Annotated[Text, Field(min_length=1, max_length=MAX_MESSAGE_CHARS), Tag(TEXT)]
        | Annotated[
            list[InputMessage],
            Field(min_length=1, max_length=MAX_MESSAGES),
            Tag(LIST),
        ],
        # Errors name the form the client sent (a list: its length or items), not both
        # members of the union.
        Discriminator(text_or_list),
    ]
    conversation_id: Annotated[Label, Field(max_length=64)] | None = None

    def sdk_input(self) -> str | list[Any]:
        """The input in the form `Runner.run` takes."""
        if isinstance(self.input, str):
            return self.input
        return [{"role": m.role, "content": m.content} for m in self.input]


class RunRequest(TurnInput):
    stream: JsonBool = False
    metadata: Metadata = None

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return bounded_metadata(value)


class Decision(BaseModel):
    """One human decision on a pending tool call."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[Label, Field(min_length=1, max_length=128)]
    """The pending action's `id`."""
    approve: JsonBool
    message: Annotated[Text, Field(max_length=2_000)] | None = None
    """For a declined call: added to the refusal the model sees."""


class ActionsRequest(BaseModel):
    """`POST /v1/runs/{run_id}/actions`: a decision for every pending call."""

    model_config = ConfigDict(extra="forbid")

    decisions: Annotated[list[Decision], Field(min_length=1, max_length=64)]
    stream: JsonBool = False
