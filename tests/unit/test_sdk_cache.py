"""The SDK's per-run work cached per built graph: same results as the SDK's own functions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import agents.run_internal.tool_use_tracker as tool_use_tracker
import agents.run_state as run_state
import agents.sandbox.runtime_session_manager as runtime_session_manager
import pytest
from agents import Agent, RunConfig, Runner, handoff
from agents.run_internal import agent_tool_configuration as tool_configuration
from agents.testing import ModelStep, ScriptedModel, assistant_message

from gateway.agents import sdk_cache
from gateway.agents.builder import build_graph
from tenants.agent.spec import AgentSpec


@pytest.fixture
def installed() -> Iterator[None]:
    sdk_cache.install()
    yield
    sdk_cache.uninstall()


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the SDK's own identity keys were computed."""
    calls: list[int] = []
    original = sdk_cache._original_keys_by_id

    def counting(agent: Any) -> dict[int, str]:
        calls.append(id(agent))
        return original(agent)

    monkeypatch.setattr(sdk_cache, "_original_keys_by_id", counting)
    return calls


def graph_with_duplicate_names() -> Agent[Any]:
    """A root with handoffs, two of them to different agents of the same name."""
    twin_a = Agent(name="twin", instructions="A")
    twin_b = Agent(name="twin", instructions="B")
    other = Agent(name="other", handoffs=[twin_b])
    return Agent(name="root", handoffs=[handoff(twin_a), other])


def test_install_reaches_every_module_that_computes_identity_keys(installed: None) -> None:
    for module in (tool_use_tracker, run_state, runtime_session_manager):
        assert module._build_agent_identity_keys_by_id is sdk_cache.cached_identity_keys_by_id  # type: ignore[attr-defined]
    assert tool_configuration._observe_tools is sdk_cache.observe_tools
    sdk_cache.uninstall()
    assert run_state._build_agent_identity_keys_by_id is sdk_cache._original_keys_by_id  # type: ignore[attr-defined]
    sdk_cache.install()


def test_a_sealed_graph_computes_its_keys_once(installed: None, computed: list[int]) -> None:
    root = graph_with_duplicate_names()
    expected = sdk_cache._original_keys_by_id(root)
    computed.clear()
    sdk_cache.seal(root)
    first = sdk_cache.cached_identity_keys_by_id(root)
    second = sdk_cache.cached_identity_keys_by_id(root)
    assert first == second == expected
    assert sorted(expected.values()) == ["other", "root", "twin", "twin#2"]
    assert len(computed) == 1
    first.clear()  # a caller's copy: the cache is not changed through it
    assert sdk_cache.cached_identity_keys_by_id(root) == expected


def test_an_unsealed_agent_is_computed_every_time(installed: None, computed: list[int]) -> None:
    root = graph_with_duplicate_names()
    sdk_cache.cached_identity_keys_by_id(root)
    sdk_cache.cached_identity_keys_by_id(root)
    assert len(computed) == 2


def test_a_changed_graph_is_computed_again(installed: None, computed: list[int]) -> None:
    root = graph_with_duplicate_names()
    sdk_cache.seal(root)
    before = sdk_cache.cached_identity_keys_by_id(root)
    root.handoffs = [Agent(name="newcomer")]
    after = sdk_cache.cached_identity_keys_by_id(root)
    assert sorted(after.values()) == ["newcomer", "root"] != sorted(before.values())
    assert after == sdk_cache._original_keys_by_id(root)
    assert len(computed) == 3


def test_the_builder_seals_what_it_builds(installed: None, computed: list[int]) -> None:
    spec = AgentSpec.model_validate({"instructions": "Be brief.", "model": "m"})
    built = build_graph("solo", {"solo": (1, spec)}, default_model="m")
    for _ in range(3):
        assert sdk_cache.cached_identity_keys_by_id(built.agent) == {id(built.agent): "solo"}
    assert len(computed) == 1


def _resolution(initial: tuple[Any, ...], assigned: bool) -> Any:
    return SimpleNamespace(initial_tools=initial, tools_assigned=assigned, conflicted=False)


def test_observe_tools_decides_as_the_sdk_does() -> None:
    """Every combination of run counts, assigned flags and tool lists (same objects, other
    objects, other lengths, the same tuple): the same runs end up marked conflicted."""
    tool_a, tool_b, tool_c = object(), object(), object()
    lists = [(), (tool_a,), (tool_a, tool_b), (tool_b, tool_a), (tool_a, tool_c)]
    rng = random.Random(7)
    for runs in (1, 2, 3, 5):
        for _ in range(200):
            initials = [rng.choice(lists) for _ in range(runs)]
            assigned = [rng.random() < 0.2 for _ in range(runs)]
            tools = rng.choice([*lists, initials[0], tuple(initials[0])])
            ours = [_resolution(i, a) for i, a in zip(initials, assigned, strict=True)]
            sdks = [_resolution(i, a) for i, a in zip(initials, assigned, strict=True)]
            sdk_cache.observe_tools(ours, tools)
            sdk_cache._original_observe_tools(sdks, tools)
            assert [r.conflicted for r in ours] == [r.conflicted for r in sdks]


async def test_runs_under_the_cache_answer_as_without_it(installed: None) -> None:
    model = ScriptedModel(steps=[ModelStep(output=[assistant_message("hi")])] * 4)
    spec = AgentSpec.model_validate({"instructions": "Be brief.", "model": "m"})
    built = build_graph("solo", {"solo": (1, spec)}, default_model="m")
    outputs = []
    for _ in range(2):
        result = await Runner.run(built.agent, "hello", run_config=RunConfig(model=model))
        outputs.append(result.final_output)
    sdk_cache.uninstall()
    result = await Runner.run(built.agent, "hello", run_config=RunConfig(model=model))
    assert outputs == [result.final_output] * 2 == ["hi", "hi"]


def test_traceable_settings_are_the_sdks(installed: None) -> None:
    from agents import ModelSettings
    from agents.model_settings import Reasoning

    cases = [
        ModelSettings(),
        ModelSettings(temperature=0.2, top_p=0.9, max_tokens=64, metadata={"a": "b"}),
        ModelSettings(
            tool_choice="auto",
            parallel_tool_calls=True,
            reasoning=Reasoning(effort="low"),
            extra_args={"secret": "x"},
            extra_headers={"h": "v"},
        ),
    ]
    assert ModelSettings.to_traceable_dict is sdk_cache.traceable_dict  # type: ignore[comparison-overlap]
    for settings in cases:
        assert settings.to_traceable_dict() == sdk_cache._original_traceable_dict(settings)
    assert "extra_args" not in cases[2].to_traceable_dict()


def test_the_default_run_config_is_built_once_and_read_only_for_its_name(installed: None) -> None:
    from agents.run_internal import agent_runner_helpers

    factory = agent_runner_helpers.RunConfig  # type: ignore[attr-defined]
    assert factory is sdk_cache.run_config
    assert factory() is factory() and factory().workflow_name == RunConfig().workflow_name
    named = factory(workflow_name="t/a")
    assert named is not factory() and named.workflow_name == "t/a"
    assert sdk_cache._users_of(agent_runner_helpers, "RunConfig") == {"resolve_trace_settings"}
    sdk_cache.uninstall()
    assert agent_runner_helpers.RunConfig is RunConfig  # type: ignore[attr-defined]
    sdk_cache.install()


async def test_trace_settings_of_a_run_are_the_sdks(installed: None) -> None:
    from agents.run_internal.agent_runner_helpers import resolve_trace_settings

    for config in (RunConfig(), RunConfig(workflow_name="t/a", group_id="g")):
        ours = resolve_trace_settings(run_state=None, run_config=config)
        sdk_cache.uninstall()
        try:
            stock = resolve_trace_settings(run_state=None, run_config=config)
        finally:
            sdk_cache.install()
        assert ours == stock
