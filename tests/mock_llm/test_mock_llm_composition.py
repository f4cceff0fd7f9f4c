"""What the mock LLM does for agent composition, through the real Agents SDK over HTTP, both
APIs, plain and streamed: structured output that satisfies the requested schema, handoff
calls named in the message, `[[tripwire]]`, `[[loop]]` and `[[invalid-json]]`."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from agents import (
    Agent,
    MaxTurnsExceeded,
    ModelBehaviorError,
    RunConfig,
    Runner,
    handoff,
)
from agents.models.openai_provider import OpenAIProvider
from pydantic import BaseModel

from gateway.mock_llm.logic import Conversation, ToolDef, plan_answer, schema_instance


class Verdict(BaseModel):
    tripwire: bool
    reason: str


class Order(BaseModel):
    status: str
    items: list[str]
    count: int


async def _run(
    url: str, agent: Agent[Any], text: str, *, use_responses: bool, streamed: bool
) -> Any:
    async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client:
        config = RunConfig(
            model="mock-model",
            model_provider=OpenAIProvider(openai_client=client, use_responses=use_responses),
            tracing_disabled=True,
        )
        if not streamed:
            return await Runner.run(agent, text, run_config=config, max_turns=6)
        result = Runner.run_streamed(agent, text, run_config=config, max_turns=6)
        async for _ in result.stream_events():
            pass
        return result


both = pytest.mark.parametrize("use_responses", [True, False], ids=["responses", "chat"])
streams = pytest.mark.parametrize("streamed", [False, True], ids=["run", "streamed"])


@both
@streams
async def test_structured_output_satisfies_the_schema(
    mock_llm_url: str, use_responses: bool, streamed: bool
) -> None:
    agent: Agent[Any] = Agent(name="orders", output_type=Order)
    result = await _run(
        mock_llm_url, agent, "where is my order", use_responses=use_responses, streamed=streamed
    )
    assert result.final_output == Order(
        status="Mock answer to: where is my order", items=[], count=0
    )


@both
@streams
async def test_tripwire_marker_sets_the_tripwire_field(
    mock_llm_url: str, use_responses: bool, streamed: bool
) -> None:
    agent: Agent[Any] = Agent(name="classifier", output_type=Verdict)
    plain = await _run(mock_llm_url, agent, "hello", use_responses=use_responses, streamed=False)
    assert plain.final_output.tripwire is False
    tripped = await _run(
        mock_llm_url, agent, "bad [[tripwire]]", use_responses=use_responses, streamed=streamed
    )
    assert tripped.final_output == Verdict(tripwire=True, reason="Mock answer to: bad")


@both
async def test_invalid_json_marker_breaks_the_schema(
    mock_llm_url: str, use_responses: bool
) -> None:
    agent: Agent[Any] = Agent(name="orders", output_type=Order)
    with pytest.raises(ModelBehaviorError):
        await _run(
            mock_llm_url, agent, "x [[invalid-json]]", use_responses=use_responses, streamed=False
        )


@both
@streams
async def test_handoff_named_in_the_message_is_called(
    mock_llm_url: str, use_responses: bool, streamed: bool
) -> None:
    billing: Agent[Any] = Agent(name="billing")
    triage: Agent[Any] = Agent(name="triage", handoffs=[handoff(billing)])
    result = await _run(
        mock_llm_url,
        triage,
        "please transfer_to_billing now",
        use_responses=use_responses,
        streamed=streamed,
    )
    assert result.last_agent is billing
    assert result.final_output == 'The transfer_to_billing tool returned: {"assistant": "billing"}'


@both
async def test_cycle_without_loop_ends_and_with_loop_hits_max_turns(
    mock_llm_url: str, use_responses: bool
) -> None:
    triage: Agent[Any] = Agent(name="triage")
    billing: Agent[Any] = Agent(name="billing", handoffs=[handoff(triage)])
    triage.handoffs = [handoff(billing)]
    text = "transfer_to_billing then transfer_to_triage"
    result = await _run(mock_llm_url, triage, text, use_responses=use_responses, streamed=False)
    assert result.last_agent is triage  # triage -> billing -> triage, each handoff once
    with pytest.raises(MaxTurnsExceeded):
        await _run(
            mock_llm_url, triage, text + " [[loop]]", use_responses=use_responses, streamed=False
        )


def test_schema_instance_covers_refs_unions_enums_and_minimums() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["a", "b"]},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
            "ref": {"$ref": "#/$defs/thing"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        },
        "$defs": {"thing": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    assert schema_instance(schema, "t") == {
        "kind": "a",
        "maybe": 3,
        "ref": {"ok": False},
        "tags": ["t", "t"],
    }


def test_a_handoff_after_tool_results_and_its_usage() -> None:
    conv = Conversation(
        chars=40,
        user_text="go transfer_to_billing",
        tools=[ToolDef("transfer_to_billing", {}), ToolDef("calculator", {})],
        tool_result=("calculator", "5"),
        called={"calculator"},
    )
    plan = plan_answer(conv)
    assert (plan.tool_name, plan.arguments) == ("transfer_to_billing", "{}")
    assert (plan.input_tokens, plan.output_tokens) == (10, 10)
    conv.called.add("transfer_to_billing")
    assert plan_answer(conv).tool_name is None
