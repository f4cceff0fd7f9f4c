"""Spec -> SDK Agent, and run metering, with the SDK's ScriptedModel as the model."""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, RunConfig, Runner
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import InputTokensDetails, OutputTokensDetails, Usage

from gateway.agents.builder import build_agent
from gateway.runs.meter import RunMeter
from tenants.agent.spec import AgentSpec


def usage(inp: int, out: int, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        requests=1,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=inp + out,
        input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )


def test_spec_becomes_an_sdk_agent() -> None:
    spec = AgentSpec(
        instructions="Be brief.",
        model="gpt-x",
        model_settings={"temperature": 0.2, "max_tokens": 64},
        tools=["calculator"],
        max_turns=3,
    )
    built = build_agent("helper", 4, spec, default_model="fallback")
    assert built.agent.name == "helper"
    assert built.agent.instructions == "Be brief."
    assert built.model == "gpt-x" and built.agent.model == "gpt-x"
    assert built.agent.model_settings.temperature == 0.2
    assert built.agent.model_settings.max_tokens == 64
    assert built.agent.model_settings.include_usage is True
    assert [t.name for t in built.agent.tools] == ["calculator"]
    assert (built.version, built.max_turns) == (4, 3)


def test_spec_without_model_uses_the_default() -> None:
    built = build_agent("a", 1, AgentSpec(), default_model="fallback")
    assert built.model == "fallback"


async def test_meter_sums_every_model_call_including_before_a_failure() -> None:
    spec = AgentSpec(tools=["calculator"])
    built = build_agent("calc", 1, spec, default_model="m")
    model = ScriptedModel(
        [
            ModelStep(
                output=[function_call("calculator", {"expression": "2+3"}, call_id="c1")],
                usage=usage(100, 10, cached=40),
            ),
            ModelStep(output=[assistant_message("5")], usage=usage(130, 3, reasoning=2)),
        ]
    )
    agent: Agent[None] = built.agent.clone(model=model)
    meter = RunMeter("m")
    result = await Runner.run(
        agent, "2+3?", hooks=meter, run_config=RunConfig(tracing_disabled=True)
    )
    assert result.final_output == "5"
    assert meter.as_dict() == {
        "requests": 2,
        "input_tokens": 230,
        "output_tokens": 13,
        "total_tokens": 243,
    }
    assert (meter.total.cached_tokens, meter.total.reasoning_tokens) == (40, 2)
    assert result.context_wrapper.usage.total_tokens == 243

    failing = ScriptedModel(
        [
            ModelStep(
                output=[function_call("calculator", {"expression": "1"}, call_id="c2")],
                usage=usage(50, 5),
            ),
            RuntimeError("upstream went away"),
        ]
    )
    meter = RunMeter("m")
    with pytest.raises(RuntimeError, match="upstream went away"):
        await Runner.run(
            built.agent.clone(model=failing),
            "1?",
            hooks=meter,
            run_config=RunConfig(tracing_disabled=True),
        )
    assert meter.as_dict() == {
        "requests": 1,
        "input_tokens": 50,
        "output_tokens": 5,
        "total_tokens": 55,
    }


async def test_a_client_gone_before_a_call_starts_forbids_that_call() -> None:
    """The stream's consumer leaves while no call is in flight (`stop_after_call` is False:
    it cancels the run), but the SDK's own task may reach its next call before it sees the
    cancellation: that call is never sent (it would be billed and not metered)."""
    spec = AgentSpec()
    built = build_agent("plain", 1, spec, default_model="m")
    model = ScriptedModel([ModelStep(output=[assistant_message("hi")], usage=usage(10, 2))])
    meter = RunMeter("m")
    assert meter.stop_after_call() is False  # nothing in flight: the caller cancels the run
    # It ends as cancelled (as the caller is cancelling it), not with an exception the SDK's
    # task would hold unread.
    with pytest.raises(asyncio.CancelledError):
        await Runner.run(
            built.agent.clone(model=model),
            "hello",
            hooks=meter,
            run_config=RunConfig(tracing_disabled=True),
        )
    assert meter.as_dict()["requests"] == 0
    assert not model.calls, "the scripted model was never called"
