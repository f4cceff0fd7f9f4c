"""Unit tests of the deterministic mock logic (no server)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.mock_llm.chat import normalize_chat
from gateway.mock_llm.logic import (
    ToolDef,
    build_arguments,
    parse_markers,
    parse_tool_calls,
    plan_answer,
    split_words,
    strip_markers,
)
from gateway.mock_llm.responses import normalize_responses

CALC = ToolDef(
    "calculator",
    {
        "type": "object",
        "properties": {
            "expression": {"type": "string"},
            "precise": {"type": "boolean"},
            "digits": {"type": ["integer", "null"]},
            "extra": {"type": "object"},
        },
        "required": ["expression", "precise", "digits", "extra"],
    },
)


def test_markers() -> None:
    assert parse_markers("plain text") == (None, 0.0)
    assert parse_markers("x [[fault:503]] y [[latency:250]]") == ("503", 250.0)
    assert parse_markers("[[FAULT:Timeout]]") == ("timeout", 0.0)
    assert strip_markers("hello [[fault:500]] world [[latency:10]] ") == "hello world"


def test_split_words_preserves_text() -> None:
    text = "  Mock answer\nto:  two   words "
    chunks = split_words(text)
    assert "".join(chunks) == text.strip()
    assert len(chunks) == 5


def test_arguments_from_expression_schema_and_json_literal() -> None:
    args = orjson.loads(build_arguments(CALC, "what is 2+3*4 please"))
    assert args == {"expression": "2+3*4", "precise": False, "digits": 0, "extra": None}
    args = orjson.loads(build_arguments(CALC, "compute (1 + 2) * 3.5 now"))
    assert args["expression"] == "(1 + 2) * 3.5"
    args = orjson.loads(build_arguments(CALC, "no math here"))
    assert args["expression"] == "no math here"
    literal = build_arguments(CALC, 'use calculator with {"expression": "7*6"} ok')
    assert orjson.loads(literal) == {"expression": "7*6"}


def test_chat_usage_formula_and_tool_flow() -> None:
    tool = {
        "type": "function",
        "function": {"name": "calculator", "description": "Calc.", "parameters": CALC.parameters},
    }
    params_len = len(orjson.dumps(CALC.parameters))
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "what is 2+3 with calculator"}]},
        ],
        "tools": [tool],
    }
    chars = len("Be brief.") + len("what is 2+3 with calculator") + 10 + 5 + params_len
    plan = plan_answer(normalize_chat(body))
    assert plan.tool_name == "calculator"
    assert plan.input_tokens == chars // 4
    assert plan.output_tokens == 10 + len(plan.arguments) // 4

    body["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": plan.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    plan2 = plan_answer(normalize_chat(body))
    assert plan2.tool_name is None
    assert plan2.text == "The calculator tool returned: 5"
    assert plan2.output_tokens == 5
    assert plan2.input_tokens == (chars + 10 + len(plan.arguments) + 1) // 4


def test_responses_normalisation_matches_chat() -> None:
    body = {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        "tools": [{"type": "function", "name": "calculator", "parameters": CALC.parameters}],
    }
    plan = plan_answer(normalize_responses(body))
    assert plan.tool_name is None
    assert plan.text == "Mock answer to: hi"
    chars = 9 + 5 + 2 + 2 + 10 + len(orjson.dumps(CALC.parameters))
    assert plan.input_tokens == chars // 4
    assert plan_answer(normalize_responses({"input": "x"})).input_tokens == 1


def test_tool_choice_rules() -> None:
    tools = [{"type": "function", "name": "alpha"}, {"type": "function", "name": "beta"}]
    mention = {"input": "use beta then alpha", "tools": tools}
    assert plan_answer(normalize_responses(mention)).tool_name == "beta"
    assert plan_answer(normalize_responses({**mention, "tool_choice": "none"})).tool_name is None
    forced = {"input": "hello", "tools": tools, "tool_choice": {"type": "function", "name": "beta"}}
    assert plan_answer(normalize_responses(forced)).tool_name == "beta"
    required = {"input": "hello", "tools": tools, "tool_choice": "required"}
    assert plan_answer(normalize_responses(required)).tool_name == "alpha"
    assert plan_answer(normalize_responses({"input": "alphabet", "tools": tools})).tool_name is None


def test_max_tokens_truncation() -> None:
    body = {"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 3}
    plan = plan_answer(normalize_chat(body))
    assert plan.truncated
    assert plan.text == "Mock answer to:"
    assert plan.output_tokens == 3
    body = {"input": "use calculator", "tools": [{"type": "function", "name": "calculator"}]}
    plan = plan_answer(normalize_responses({**body, "max_output_tokens": 2}))
    assert plan.tool_name == "calculator"
    assert plan.output_tokens == 2


def test_tool_calls_marker_repeats_the_call() -> None:
    """`[[tool-calls:N]]`: N calls of the named tool, one per answer, then the text answer
    (both wire formats); the marker never reaches the arguments or the echoed text."""
    tool = {"type": "function", "name": "calculator", "parameters": CALC.parameters}
    body: dict[str, Any] = {
        "input": [{"role": "user", "content": "calculator 2+3 [[tool-calls:3]]"}]
    }
    body["tools"] = [tool]
    names = []
    for turn in range(4):
        conv = normalize_responses(body)
        conv.repeat_calls = parse_tool_calls(conv.user_text)
        conv.user_text = strip_markers(conv.user_text)
        plan = plan_answer(conv)
        names.append(plan.tool_name)
        if plan.tool_name is None:
            break
        assert orjson.loads(plan.arguments)["expression"] == "2+3"
        body["input"] += [
            {
                "type": "function_call",
                "call_id": f"c{turn}",
                "name": "calculator",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": f"c{turn}", "output": str(turn)},
        ]
    assert names == ["calculator", "calculator", "calculator", None]
    assert plan.text == "The calculator tool returned: 2"

    chat: dict[str, Any] = {
        "messages": [{"role": "user", "content": "calculator 1+1 [[tool-calls:2]]"}],
        "tools": [{"type": "function", "function": {"name": "calculator", "parameters": {}}}],
    }
    answers = []
    for turn in range(3):
        conv = normalize_chat(chat)
        conv.repeat_calls = parse_tool_calls(conv.user_text)
        plan = plan_answer(conv)
        answers.append(plan.tool_name)
        call = {"id": f"c{turn}", "type": "function", "function": {"name": "calculator"}}
        chat["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{turn}", "content": "2"},
        ]
    assert answers == ["calculator", "calculator", None]
    # A new user message starts the count again; 0 calls: the plain text answer.
    chat["messages"].append({"role": "user", "content": "again calculator [[tool-calls:1]]"})
    conv = normalize_chat(chat)
    assert conv.tool_calls == 0 and conv.tool_result is None
    assert parse_tool_calls("calculator [[tool-calls:0]]") == 0
    conv = normalize_chat(
        {"messages": [{"role": "user", "content": "calculator"}], "tools": chat["tools"]}
    )
    conv.repeat_calls = 0
    assert plan_answer(conv).tool_name is None
    assert parse_tool_calls("no marker") is None
    assert strip_markers("use calculator [[tool-calls:3]] on 2+3") == "use calculator on 2+3"
