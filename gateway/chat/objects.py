"""The OpenAI objects the endpoint answers with: `chat.completion` and its stream chunks."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from gateway.runs.handle import RunHandle


def completion_id(handle: RunHandle) -> str:
    """`chatcmpl-<run id>`: the run id stays findable in usage records and logs."""
    return f"chatcmpl-{handle.run_id}"


def created(handle: RunHandle) -> int:
    """The run's start as Unix seconds."""
    return int(handle.created_at.timestamp())


def output_text(output: Any) -> str:
    """The agent's final output as message content (JSON text when it is structured)."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    return orjson.dumps(output, default=str).decode()


def usage(handle: RunHandle) -> dict[str, Any]:
    """The run's exact usage (the meter's sums over its model calls) in OpenAI's names."""
    total = handle.meter.total
    return {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.total_tokens,
        "prompt_tokens_details": {"cached_tokens": total.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": total.reasoning_tokens},
    }


def finish_reason(handle: RunHandle) -> str:
    """`length` when the answer's model call used all of its `max_tokens` (the answer was cut
    there, as OpenAI reports it), else `stop`."""
    return "length" if handle.meter.last_call_cut else "stop"


def completion(handle: RunHandle, output: Any) -> dict[str, Any]:
    """The `chat.completion` object of a finished run."""
    return {
        "id": completion_id(handle),
        "object": "chat.completion",
        "created": created(handle),
        "model": handle.built.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output_text(output)},
                "finish_reason": finish_reason(handle),
                "logprobs": None,
            }
        ],
        "usage": usage(handle),
    }
