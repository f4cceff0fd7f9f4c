"""The OpenAI Agents SDK end to end against the mock (Responses and Chat Completions)."""

from __future__ import annotations

import openai
import orjson
import pytest
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider

INSTRUCTIONS = "You are a helpful assistant."
QUESTION = "what is 2+3 with calculator"
calls: list[str] = []


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, e.g. "2+3".
    """
    calls.append(expression)
    return str(eval(expression, {"__builtins__": {}}))  # noqa: S307 - test-only, tiny input


def expected_usage() -> tuple[int, int]:
    """Input/output tokens of the two model calls, from the documented formula."""
    tool_chars = (
        len(calculator.name)
        + len(calculator.description)
        + len(orjson.dumps(calculator.params_json_schema))
    )
    chars1 = len(INSTRUCTIONS) + len(QUESTION) + tool_chars
    arguments = '{"expression":"2+3"}'
    chars2 = chars1 + len("calculator") + len(arguments) + len("5")
    out1 = 10 + len(arguments) // 4
    out2 = 5  # words of "The calculator tool returned: 5"
    return chars1 // 4 + chars2 // 4, out1 + out2


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("use_responses", [True, False], ids=["responses", "chat"])
async def test_agent_calls_tool(mock_llm_url: str, use_responses: bool, streamed: bool) -> None:
    calls.clear()
    agent = Agent(
        name="assistant",
        instructions=INSTRUCTIONS,
        tools=[calculator],
        model_settings=ModelSettings(include_usage=True),
    )
    async with openai.AsyncOpenAI(
        base_url=mock_llm_url, api_key="x", max_retries=0, _strict_response_validation=True
    ) as client:
        run_config = RunConfig(
            model="mock-model",
            model_provider=OpenAIProvider(openai_client=client, use_responses=use_responses),
            tracing_disabled=True,
        )
        if streamed:
            result = Runner.run_streamed(agent, QUESTION, run_config=run_config)
            deltas = 0
            async for event in result.stream_events():
                if event.type == "raw_response_event" and "delta" in event.data.type:
                    deltas += 1
            assert deltas >= 5
        else:
            result = await Runner.run(agent, QUESTION, run_config=run_config)  # type: ignore[assignment]
    assert calls == ["2+3"]
    assert result.final_output == "The calculator tool returned: 5"
    usage = result.context_wrapper.usage
    input_tokens, output_tokens = expected_usage()
    assert usage.requests == 2
    assert usage.input_tokens == input_tokens
    assert usage.output_tokens == output_tokens
    assert usage.total_tokens == input_tokens + output_tokens


@pytest.mark.parametrize("use_responses", [True, False], ids=["responses", "chat"])
async def test_tool_calls_marker_gives_k_model_calls(
    mock_llm_url: str, use_responses: bool
) -> None:
    """`[[tool-calls:3]]`: the SDK runs 3 tool calls and a final answer, 4 model calls."""
    calls.clear()
    agent = Agent(
        name="assistant",
        instructions=INSTRUCTIONS,
        tools=[calculator],
        model_settings=ModelSettings(include_usage=True),
    )
    async with openai.AsyncOpenAI(base_url=mock_llm_url, api_key="x", max_retries=0) as client:
        run_config = RunConfig(
            model="mock-model",
            model_provider=OpenAIProvider(openai_client=client, use_responses=use_responses),
            tracing_disabled=True,
        )
        result = await Runner.run(
            agent, "Use the calculator on 2+3 [[tool-calls:3]]", run_config=run_config, max_turns=4
        )
    assert calls == ["2+3", "2+3", "2+3"]
    assert result.final_output == "The calculator tool returned: 5"
    assert result.context_wrapper.usage.requests == 4
