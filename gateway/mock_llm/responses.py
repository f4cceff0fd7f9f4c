"""Responses API (``/v1/responses``) wire format of the mock LLM."""

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
    tool_chars,
)

ARGS_CHUNK = 16
"""Size (characters) of the streamed function-call argument pieces."""


def normalize_responses(body: dict[str, Any]) -> Conversation:
    """Normalise a Responses API request body.

    Args:
        body: The decoded JSON request (``input`` is a string or a list of items).

    Returns:
        The API-independent :class:`Conversation`.
    """
    conv = Conversation(
        tool_choice=body.get("tool_choice", "auto"),
        max_tokens=max_tokens_of(body, "max_output_tokens"),
    )
    instructions = body.get("instructions")
    chars = len(instructions) if isinstance(instructions, str) else 0
    items = body.get("input")
    if isinstance(items, str):
        conv.user_text = items
        chars += len(items)
        items = ()
    names: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind is None or kind == "message":
            text = content_text(item.get("content"))
            chars += len(text)
            if item.get("role") == "user":
                conv.user_text = text
                conv.tool_result = None
                conv.called = set()
                conv.tool_calls = 0
        elif kind == "function_call":
            name = str(item.get("name") or "")
            chars += len(name) + len(str(item.get("arguments") or ""))
            names[str(item.get("call_id"))] = name
            conv.called.add(name)
            conv.tool_calls += not name.startswith(HANDOFF_PREFIX)
        elif kind == "function_call_output":
            text = content_text(item.get("output"))
            chars += len(text)
            conv.tool_result = (names.get(str(item.get("call_id"))), text)
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") == "function":
            params = tool.get("parameters")
            tool_def = ToolDef(
                str(tool.get("name") or ""), params if isinstance(params, dict) else {}
            )
            chars += tool_chars(tool_def, tool.get("description"))
            conv.tools.append(tool_def)
    conv.output_schema = _requested_schema(body.get("text"))
    if conv.output_schema is not None:
        chars += len(orjson.dumps(conv.output_schema))
    conv.chars = chars
    return conv


def _requested_schema(text: Any) -> dict[str, Any] | None:
    """The schema of ``text: {"format": {"type": "json_schema", "schema": {...}}}``."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    schema = fmt.get("schema")
    return schema if isinstance(schema, dict) else {}


def responses_usage(plan: Plan) -> dict[str, Any]:
    """Responses API ``usage`` object of a plan."""
    return {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.total_tokens,
    }


def _output_item(plan: Plan, rid: str, done: bool) -> dict[str, Any]:
    """The single output item of a plan (in progress and empty, or final)."""
    if plan.tool_name is not None:
        return {
            "id": f"fc_{rid}",
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "arguments": plan.arguments if done else "",
            "call_id": f"call_{rid}",
            "name": plan.tool_name,
        }
    status = ("incomplete" if plan.truncated else "completed") if done else "in_progress"
    content = [_text_part(plan.text)] if done else []
    return {
        "id": f"msg_{rid}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(
    body: dict[str, Any], plan: Plan, rid: str, created: int, final: bool
) -> dict[str, Any]:
    """Build a ``response`` object.

    Args:
        body: The request body (model, tools, tool_choice... are echoed).
        plan: The answer.
        rid: Deterministic id suffix.
        created: Unix timestamp.
        final: False for the ``in_progress`` snapshot (no output, no usage) sent at the start
            of a stream; True for the finished response.

    Returns:
        The response as a dict ready for serialisation.
    """
    status = "in_progress"
    if final:
        status = "incomplete" if plan.truncated else "completed"
    instructions = body.get("instructions")
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "metadata": body.get("metadata") or {},
        "model": body.get("model") or "mock-model",
        "output": [_output_item(plan, rid, True)] if final else [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": responses_usage(plan) if final else None,
        "user": None,
    }


def responses_stream(body: dict[str, Any], plan: Plan, rid: str, created: int) -> list[bytes]:
    """Serialise a streamed answer as Responses API SSE events.

    Args:
        body: The request body.
        plan: The answer.
        rid: Deterministic id suffix.
        created: Unix timestamp.

    Returns:
        Segments: one per delta event, each to be sent after the inter-chunk delay. The
        first one also holds the ``response.created`` ... ``*.added`` events, the last one
        the ``*.done`` events and the terminal ``response.completed`` (or
        ``response.incomplete`` when truncated by ``max_output_tokens``).
    """
    seq = 0

    def event(kind: str, payload: dict[str, Any]) -> bytes:
        nonlocal seq
        payload["type"] = kind
        payload["sequence_number"] = seq
        seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    snapshot = response_object(body, plan, rid, created, final=False)
    head = event("response.created", {"response": snapshot})
    head += event("response.in_progress", {"response": snapshot})
    head += event(
        "response.output_item.added", {"output_index": 0, "item": _output_item(plan, rid, False)}
    )
    if plan.tool_name is None:
        item_id = f"msg_{rid}"
        loc = {"item_id": item_id, "output_index": 0, "content_index": 0}
        head += event("response.content_part.added", {**loc, "part": _text_part("")})
        deltas = [
            event("response.output_text.delta", {**loc, "delta": chunk, "logprobs": []})
            for chunk in plan.chunks
        ]
        tail = event("response.output_text.done", {**loc, "text": plan.text, "logprobs": []})
        tail += event("response.content_part.done", {**loc, "part": _text_part(plan.text)})
    else:
        loc = {"item_id": f"fc_{rid}", "output_index": 0}
        args = plan.arguments
        deltas = [
            event(
                "response.function_call_arguments.delta", {**loc, "delta": args[i : i + ARGS_CHUNK]}
            )
            for i in range(0, len(args), ARGS_CHUNK)
        ]
        tail = event("response.function_call_arguments.done", {**loc, "arguments": args})
    tail += event(
        "response.output_item.done", {"output_index": 0, "item": _output_item(plan, rid, True)}
    )
    final = response_object(body, plan, rid, created, final=True)
    terminal = "response.incomplete" if plan.truncated else "response.completed"
    tail += event(terminal, {"response": final})
    if not deltas:
        return [head + tail]
    deltas[0] = head + deltas[0]
    deltas[-1] += tail
    return deltas
