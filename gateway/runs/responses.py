"""What the run routes answer, for the OpenAPI document only (`responses=` of the routes).

The routes build their answers as dicts and send them with orjson (`gateway.runs.objects`,
`gateway.chat.objects`): these models describe those answers to generated clients and to the
contract test, which checks every real answer against them. Nothing validates through them on
the request path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RunUsage(BaseModel):
    """The sum of what the upstream reported for every model call of the run."""

    requests: int = Field(0, description="Model calls made.")
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class PendingAction(BaseModel):
    id: str = Field(description="What a decision names (`POST /v1/runs/{run_id}/actions`).")
    tool: str
    arguments: Any = Field(description="The call's arguments, parsed JSON.")


class RunObject(BaseModel):
    """`object: "agent.run"`: a plain run's answer, the data of a stream's `run.completed`
    and `run.requires_action` events, and a stored run."""

    id: str = Field(description="`run_…`.")
    object: str = Field(description='Always `"agent.run"`.')
    agent: str = Field(description="The agent that was called.")
    status: str = Field(
        description=(
            "`completed`, or `requires_action` (paused for an approval: see `pending_actions`);"
            " a stored run may also be `in_progress` (being resumed), `failed` or `cancelled`."
        )
    )
    output: Any = Field(
        description=(
            "The final text, or the parsed JSON object when the agent has an output schema;"
            " null while the run is not completed."
        )
    )
    conversation_id: str | None
    model: str
    usage: RunUsage
    created_at: str = Field(description="RFC 3339 UTC.", json_schema_extra={"format": "date-time"})
    pending_actions: list[PendingAction] | None = Field(
        None, description="The tool calls waiting for a decision (`requires_action` only)."
    )
    expires_at: str | None = Field(
        None,
        description="When a paused run expires (`requires_action` only).",
        json_schema_extra={"format": "date-time"},
    )
    error: dict[str, Any] | None = Field(
        None,
        description=(
            "Why a stored run failed (`failed` after a resume): the error object its resume"
            ' answered, `{"type", "code", "message", "param"}`.'
        ),
    )


class ChatMessageOut(BaseModel):
    role: str = Field(description='Always `"assistant"`.')
    content: str = Field(description="The agent's answer (JSON text for structured output).")


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object (`model` is the agent's name)."""

    id: str = Field(description="`chatcmpl-<run id>`.")
    object: str = Field(description='Always `"chat.completion"`.')
    created: int = Field(description="Unix seconds.")
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": (
                "With `stream: true` or `Accept: text/event-stream`: named events"
                " `run.created`, `output_text.delta`, `tool.called`, `tool.output`,"
                " `agent.handoff`, then one terminal event (`run.completed` or"
                " `run.requires_action` with the run object, `run.failed` with"
                ' `{"error": …}`); `: keep-alive` comments.'
            ),
        }
    }
}
CHUNK_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": (
                "With `stream: true`: `data:` lines of `chat.completion.chunk` objects, then"
                ' `data: [DONE]` (a failure: `data: {"error": …}` and no `[DONE]`).'
            ),
        }
    }
}


def run_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that answers a run object, plain or streamed."""
    return {200: {"model": RunObject, "description": description, "content": EVENT_STREAM}}
