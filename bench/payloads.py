"""Request bodies and the agent spec shared by every point of the benchmark."""

from __future__ import annotations

from typing import Any

INSTRUCTIONS = "You are a concise assistant."
MODEL = "gpt-4.1-mini"
TOOLS = ["calculator", "current_time"]
MAX_TURNS = 4
AGENT_NAME = "assistant"
PROMPT = "Say hello to the benchmark"  # names no tool: one model call per run

AGENT_SPEC: dict[str, Any] = {
    "instructions": INSTRUCTIONS,
    "model": MODEL,
    "tools": TOOLS,
    "max_turns": MAX_TURNS,
}
RUN_BODY: dict[str, Any] = {"input": PROMPT}

# What openai-agents 0.24 POSTs to /v1/responses for one turn of the bench agent, captured
# from the wire (same agent built by gateway.agents.builder, same provider).
RESPONSES_BODY: dict[str, Any] = {
    "model": MODEL,
    "include": [],
    "input": [{"content": PROMPT, "role": "user"}],
    "instructions": INSTRUCTIONS,
    "tools": [
        {
            "name": "calculator",
            "parameters": {
                "properties": {
                    "expression": {
                        "description": "The arithmetic expression, for example `2 + 3 * 4`.",
                        "title": "Expression",
                        "type": "string",
                    }
                },
                "required": ["expression"],
                "title": "calculator_args",
                "type": "object",
                "additionalProperties": False,
            },
            "strict": True,
            "type": "function",
            "description": (
                "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."
            ),
        },
        {
            "name": "current_time",
            "parameters": {
                "properties": {},
                "title": "current_time_args",
                "type": "object",
                "additionalProperties": False,
                "required": [],
            },
            "strict": True,
            "type": "function",
            "description": "Current date and time in UTC (ISO 8601).",
        },
    ],
}

# The plain agent of the full-controls point (d) and the LiteLLM comparison (e): instructions
# only, no tools, one model call per request, called through the OpenAI-compatible endpoint.
PLAIN_AGENT_NAME = "plain"
PLAIN_AGENT_SPEC: dict[str, Any] = {"instructions": INSTRUCTIONS, "model": MODEL}
CHAT_MESSAGES: list[dict[str, str]] = [{"role": "user", "content": PROMPT}]
STREAM_OPTIONS: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def chat_body(model: str, *, stream: bool = False) -> dict[str, Any]:
    """`POST /v1/chat/completions` of a client: `model` is the agent (gateway) or the alias
    (LiteLLM); streamed with `stream_options.include_usage`."""
    body: dict[str, Any] = {"model": model, "messages": CHAT_MESSAGES}
    return body | STREAM_OPTIONS if stream else body


# What the gateway POSTs upstream to /v1/chat/completions for one turn of the plain agent
# (GATEWAY_UPSTREAM_API=chat_completions), captured from the wire: the mock-direct point (a')
# sends exactly this.
UPSTREAM_CHAT_BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"content": INSTRUCTIONS, "role": "system"}, *CHAT_MESSAGES],
}
