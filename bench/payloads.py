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
