"""Request body of `POST /v1/chat/completions`: an OpenAI Chat Completions request, narrowed
to what an agent run honours.

`model` names one of the tenant's agents (any other name, however spelt, is a 404). Sampling
parameters that OpenAI clients commonly send (`temperature`, `top_p`, `seed`, the penalties,
`max_tokens` / `max_completion_tokens`, `stop`, `parallel_tool_calls`, `store`) are accepted,
bounded as OpenAI bounds them, and ignored: the agent's configuration decides how its model
samples and how long it may answer (the tenant's quotas reserve by it). Parameters that would
change what the answer is (`tools`, `functions`, `tool_choice`, `response_format` other than
text, `logprobs`, `audio`, ...) are refused with a 422 that names them, and so is any other
unknown field (extra="forbid"). A refused parameter sent as `null` (or as the value that asks
for what the agent does anyway: `ASKS_NOTHING`) is accepted.

`user` is accepted for compatibility and ignored: a run's end user (usage records, per-user
limits) is the `sub` of the tenant-signed JWT, which a caller cannot choose per request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.core.json_types import JsonBool, JsonInteger, JsonNumber
from gateway.core.metadata import Metadata, bounded_metadata
from gateway.core.text import Label, Text
from gateway.core.unions import LIST, TEXT, text_or_list
from gateway.runs.schemas import MAX_MESSAGE_CHARS, MAX_MESSAGES

MAX_CONTENT_PARTS = 64

AGENT_OWNED = frozenset(
    {
        "audio",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "modalities",
        "prediction",
        "reasoning_effort",
        "response_format",
        "tool_choice",
        "tools",
        "top_logprobs",
        "verbosity",
        "web_search_options",
    }
)
"""OpenAI parameters that the agent's configuration decides (model settings, tools, output)."""

ASKS_NOTHING: dict[str, Any] = {
    "response_format": {"type": "text"},
    "tools": [],
    "functions": [],
    "logprobs": False,
    "modalities": ["text"],
}
"""The value of an agent-owned parameter that asks for what the agent does anyway (a client
library's default): accepted like `null`."""


class TextPart(BaseModel):
    """One `{"type": "text", "text": ...}` content part (the only kind accepted)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Annotated[Text, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessage(BaseModel):
    """One input message; `developer` is treated as `system`.

    An assistant message as the OpenAI client returns it (`message.model_dump()`, appended to
    the next request's messages: `refusal`, and `annotations`, `audio`, `function_call` and
    `tool_calls` null or empty) is accepted, and so is a participant `name`; both are
    ignored. A message carrying tool calls is refused: the agent's own tools run inside the
    gateway, not in the client's conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    name: Annotated[Label, Field(max_length=256)] | None = None
    refusal: Annotated[Text, Field(max_length=MAX_MESSAGE_CHARS)] | None = None
    annotations: Annotated[list[Any], Field(max_length=0)] | None = None
    audio: None = None
    function_call: None = None
    tool_calls: Annotated[list[Any], Field(max_length=0)] | None = None
    content: Annotated[
        Annotated[Text, Field(max_length=MAX_MESSAGE_CHARS), Tag(TEXT)]
        | Annotated[
            list[TextPart],
            Field(min_length=1, max_length=MAX_CONTENT_PARTS),
            Tag(LIST),
        ],
        # Errors name the form the client sent, not both members of the union.
        Discriminator(text_or_list),
    ]

    @model_validator(mode="before")
    @classmethod
    def _echoed_answer(cls, data: Any) -> Any:
        """An assistant refusal as the client returned it (`content: null`, `refusal`) is
        that text; a message with tool calls is refused in words a client understands."""
        if not isinstance(data, dict):
            return data
        if data.get("tool_calls"):
            raise ValueError(
                "a message with tool_calls is not accepted: the agent's own tools run inside "
                "the gateway, so a conversation sent here holds only their text"
            )
        if (
            data.get("role") == "assistant"
            and data.get("content") is None
            and isinstance(data.get("refusal"), str)
        ):
            return {**data, "content": data["refusal"]}
        return data

    @model_validator(mode="after")
    def _bounded_text(self) -> ChatMessage:
        if len(self.text()) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message's text is at most {MAX_MESSAGE_CHARS} characters")
        return self

    def text(self) -> str:
        """The content as one string: text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: JsonBool = False
    """Send a last chunk with `usage` (and `choices: []`) before `[DONE]`."""
    include_obfuscation: JsonBool = False
    """Accepted and ignored: chunks carry no obfuscation padding."""


STREAM_OPTIONS_NEED_STREAM: dict[str, Any] = {
    "anyOf": [
        {"not": {"required": ["stream_options"]}},
        {"properties": {"stream_options": {"type": "null"}}},
        {"required": ["stream"], "properties": {"stream": {"const": True}}},
    ]
}
"""`stream_options` (not null) only with `"stream": true`, as the validator below enforces."""


class ChatCompletionRequest(BaseModel):
    """The accepted subset of the OpenAI Chat Completions request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=STREAM_OPTIONS_NEED_STREAM)

    model: Annotated[Label, Field(min_length=1)]
    """The name of the tenant's agent to run (one no agent can have is a 404 as an unknown one)."""
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: JsonBool | None = False
    stream_options: StreamOptions | None = None
    user: Annotated[Label, Field(max_length=256)] | None = None
    """Accepted and ignored (see the module docstring)."""
    n: Annotated[Literal[1], JsonInteger] | None = None
    """Only one choice: an agent run has one final answer."""
    metadata: Metadata = None
    """Same bounds as a run's metadata (≤ 16 keys)."""
    # Accepted for OpenAI clients and ignored: the agent's configuration decides these. JSON
    # numbers only (`true` is not 1, nor `"0.5"` a number).
    temperature: Annotated[float, Field(ge=0, le=2), JsonNumber] | None = None
    top_p: Annotated[float, Field(ge=0, le=1), JsonNumber] | None = None
    # Within 2**53: a JSON Schema bound past it is a float that rounds (2**63 - 1 == 2**63).
    seed: Annotated[int, Field(ge=-(2**53), le=2**53), JsonInteger] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2), JsonNumber] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2), JsonNumber] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=2**31 - 1), JsonInteger] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=2**31 - 1), JsonInteger] | None = None
    stop: (
        Annotated[
            Annotated[Text, Field(max_length=256), Tag(TEXT)]
            | Annotated[
                list[Annotated[Text, Field(max_length=256)]], Field(max_length=4), Tag(LIST)
            ],
            Discriminator(text_or_list),
        ]
        | None
    ) = None
    parallel_tool_calls: JsonBool | None = None
    store: JsonBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_agent_owned(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        refused = [
            name
            for name in data
            if name in AGENT_OWNED
            and data[name] is not None
            and data[name] != ASKS_NOTHING.get(name)
        ]
        if refused:
            raise _invalid(
                refused[0],
                data[refused[0]],
                "agent_owned_parameter",
                "'{param}' is set by the agent's configuration and cannot be given per "
                "request; change the agent through the admin API instead",
            )
        return {k: v for k, v in data.items() if k not in AGENT_OWNED}

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return bounded_metadata(value)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise _invalid(
                "stream_options",
                self.stream_options.model_dump(),
                "stream_options_without_stream",
                "'{param}' is only allowed when 'stream' is true",
            )
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sdk_input(self) -> list[Any]:
        """The messages in the list form `Runner.run` takes."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


def _invalid(param: str, value: Any, error_type: str, message: str) -> ValidationError:
    """A validation error located at `param`, so the 422 body's `param` names it."""
    error = PydanticCustomError(error_type, message, {"param": param})
    return ValidationError.from_exception_data(
        ChatCompletionRequest.__name__, [InitErrorDetails(type=error, loc=(param,), input=value)]
    )
