"""Chat Completions (``/v1/chat/completions``) wire format of the mock LLM."""

from __future__ import annotations

from typing import Any

import orjson

from .logic import (
    HANDOFF_PREFIX,
    Conversation,
    Plan,
    ToolDef,
    content_text,
    max_tokens_of,
    split_words,
    tool_chars,
)

ARGS_CHUNK = 16
"""Size (characters) of the streamed tool-call argument pieces."""


def normalize_chat(body: dict[str, Any]) -> Conversation:
    """Normalise a chat completions request body.

    Args:
        body: The decoded JSON request (``messages`` must be a list).

    Returns:
        The API-independent :class:`Conversation`.
    """
    conv = Conversation(
        tool_choice=body.get("tool_choice", "auto"),
        max_tokens=max_tokens_of(body, "max_completion_tokens", "max_tokens"),
    )
    chars = 0
    names: dict[str, str] = {}
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        text = content_text(message.get("content"))
        chars += len(text)
        if role == "user":
            conv.user_text = text
            conv.tool_result = None
            conv.called = set()
            conv.tool_calls = 0
        elif role == "assistant":
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    name = str(function.get("name") or "")
                    chars += len(name) + len(str(function.get("arguments") or ""))
                    names[str(call.get("id"))] = name
                    conv.called.add(name)
                    conv.tool_calls += not name.startswith(HANDOFF_PREFIX)
        elif role == "tool":
            conv.tool_result = (names.get(str(message.get("tool_call_id"))), text)
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and tool.get("type") == "function":
            params = function.get("parameters")
            tool_def = ToolDef(
                str(function.get("name") or ""), params if isinstance(params, dict) else {}
            )
            chars += tool_chars(tool_def, function.get("description"))
            conv.tools.append(tool_def)
    conv.output_schema = _requested_schema(body.get("response_format"))
    if conv.output_schema is not None:
        chars += len(orjson.dumps(conv.output_schema))
    conv.chars = chars
    return conv


def _requested_schema(response_format: Any) -> dict[str, Any] | None:
    """The schema of ``response_format: {"type": "json_schema", "json_schema": {"schema"}}``."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {}


def chat_usage(plan: Plan) -> dict[str, Any]:
    """Chat completions ``usage`` object of a plan."""
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(plan: Plan) -> str:
    if plan.tool_name is not None:
        return "tool_calls"
    return "length" if plan.truncated else "stop"


def chat_completion(plan: Plan, rid: str, created: int, model: str) -> bytes:
    """Serialise a non-streaming ``chat.completion`` object.

    Args:
        plan: The answer.
        rid: Deterministic id suffix.
        created: Unix timestamp.
        model: Model name echoed from the request.

    Returns:
        The JSON body.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text if plan.tool_name is None else (plan.preamble or None),
        "refusal": None,
        "annotations": [],
    }
    if plan.tool_name is not None:
        message["tool_calls"] = [
            {
                "id": f"call_{rid}",
                "type": "function",
                "function": {"name": plan.tool_name, "arguments": plan.arguments},
            }
        ]
    return orjson.dumps(
        {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(plan),
                }
            ],
            "usage": chat_usage(plan),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
    )


def chat_stream(plan: Plan, rid: str, created: int, model: str, include_usage: bool) -> list[bytes]:
    """Serialise a streamed answer as ``chat.completion.chunk`` SSE frames.

    Args:
        plan: The answer.
        rid: Deterministic id suffix.
        created: Unix timestamp.
        model: Model name echoed from the request.
        include_usage: Whether ``stream_options.include_usage`` was requested (adds a final
            chunk with empty ``choices`` and the usage).

    Returns:
        Segments: one per delta, each to be sent after the inter-chunk delay. The first one
        also holds the role chunk, the last one the finish chunk, usage chunk and
        ``data: [DONE]``.
    """
    head: dict[str, Any] = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_mock",
    }
    if include_usage:
        head["usage"] = None

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    deltas: list[bytes] = []
    if plan.tool_name is None:
        first = frame({"role": "assistant", "content": "", "refusal": None})
        deltas = [frame({"content": chunk}) for chunk in plan.chunks]
    else:
        call = {
            "index": 0,
            "id": f"call_{rid}",
            "type": "function",
            "function": {"name": plan.tool_name, "arguments": ""},
        }
        if plan.preamble:  # its text first, then the call, as a model writing both does
            first = frame({"role": "assistant", "content": "", "refusal": None})
            deltas = [frame({"content": chunk}) for chunk in split_words(plan.preamble)]
            deltas.append(frame({"tool_calls": [call]}))
        else:
            first = frame({"role": "assistant", "content": None, "tool_calls": [call]})
        args = plan.arguments
        deltas += [
            frame(
                {"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + ARGS_CHUNK]}}]}
            )
            for i in range(0, len(args), ARGS_CHUNK)
        ]
    tail = frame({}, _finish_reason(plan))
    if include_usage:
        tail += b"data: " + orjson.dumps({**head, "choices": [], "usage": chat_usage(plan)})
        tail += b"\n\n"
    tail += b"data: [DONE]\n\n"
    if not deltas:
        return [first + tail]
    deltas[0] = first + deltas[0]
    deltas[-1] += tail
    return deltas
