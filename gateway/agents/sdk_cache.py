"""Per-run work of the Agents SDK that is the same for every run of a built agent graph.

Four pieces of `Runner.run` cost CPU on every run without depending on the run:

- The agent identity keys (`_build_agent_identity_keys_by_id`): a stable name per agent of
  the graph, for run-state snapshots. It serialises every agent's configuration to JSON to
  order same-named agents, twice per run (the sandbox session manager and the tool-use
  tracker snapshot), though the graph never changes. For graphs `seal`ed by the builder
  (which never changes an agent once built) it is computed once and then copied; the cache
  entry is checked against the graph's agents and names, and is dropped with the graph.
- The tool-configuration conflict check (`_observe_tools`): runs that share one `Agent`
  object (every concurrent run of a cached agent) are each checked against all the others
  on every call, with generator expressions per run: O(concurrent runs) per call, several
  calls per turn. The replacement decides exactly the same (any run with its tools
  reassigned, or a tool list that differs in length or identity, marks them all
  conflicted), with an identity fast path and no generators.

- The model settings of a generation span (`ModelSettings.to_traceable_dict`, once per model
  call): it builds a pydantic `TypeAdapter(ModelSettings)` on every call (~25 us). The
  replacement serialises the same fields with one adapter built once.

- The default workflow name (`resolve_trace_settings`, once per run): it builds a whole
  `RunConfig()`, with a `MultiProvider` and an `OpenAIProvider`, to read its default
  `workflow_name` (~30 us). The module's `RunConfig` becomes a factory that answers a call
  without arguments with one default `RunConfig` built once (any other call builds a new
  one); `install` checks that `resolve_trace_settings` is the module's only user of the name.

All four replace private SDK functions by equivalent ones; `install` checks that the originals
are where this release keeps them, and tests/unit/test_sdk_cache.py compares the results with
the originals. `GATEWAY_SDK_RUN_CACHE=false` leaves the SDK untouched.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

import agents.run_internal.tool_use_tracker
import agents.run_state
import agents.sandbox.runtime_session_manager
from agents import Agent, ModelSettings, RunConfig
from agents import _run_state_agent_identity as identity
from agents import model_settings as model_settings_module
from agents.run_internal import agent_runner_helpers
from agents.run_internal import agent_tool_configuration as tool_configuration
from pydantic import TypeAdapter

USERS_OF_IDENTITY_KEYS = (
    agents.run_internal.tool_use_tracker,
    agents.run_state,
    agents.sandbox.runtime_session_manager,
)
"""The SDK modules that call `_build_agent_identity_keys_by_id` on every run."""

_original_keys_by_id: Callable[[Agent[Any]], dict[int, str]] = (
    identity._build_agent_identity_keys_by_id
)
_original_observe_tools = tool_configuration._observe_tools

_original_traceable_dict = ModelSettings.to_traceable_dict
_TRACEABLE_FIELDS: tuple[str, ...] = tuple(model_settings_module._TRACEABLE_MODEL_SETTING_FIELDS)
_settings_adapter: TypeAdapter[ModelSettings] | None = None

_default_run_config: RunConfig | None = None

_sealed: dict[int, weakref.ref[Agent[Any]]] = {}
"""Roots of built graphs by id (the weak reference tells a reused id from the same agent)."""
_keys: dict[int, tuple[tuple[tuple[int, str], ...], dict[int, str]]] = {}
"""Identity keys of a sealed root: (the graph's (id, name) in order, the keys)."""


def seal(agent: Agent[Any]) -> None:
    """Mark `agent` (the root of a graph the builder will not change) as cacheable."""
    root_id = id(agent)

    def forget(_: object) -> None:
        _sealed.pop(root_id, None)
        _keys.pop(root_id, None)

    _sealed[root_id] = weakref.ref(agent, forget)


def _graph(agent: Agent[Any]) -> tuple[tuple[int, str], ...]:
    return tuple((id(a), a.name) for a in identity._iter_agent_graph(agent))


def cached_identity_keys_by_id(initial_agent: Agent[Any]) -> dict[int, str]:
    """`_build_agent_identity_keys_by_id`, computed once per sealed graph."""
    root_id = id(initial_agent)
    ref = _sealed.get(root_id)
    if ref is None or ref() is not initial_agent:
        return _original_keys_by_id(initial_agent)
    graph = _graph(initial_agent)
    cached = _keys.get(root_id)
    if cached is None or cached[0] != graph:
        cached = (graph, _original_keys_by_id(initial_agent))
        _keys[root_id] = cached
    return dict(cached[1])


def observe_tools(active: list[Any], tools: tuple[Any, ...]) -> None:
    """`_observe_tools` without per-run generators (same decision, same marks)."""
    if len(active) <= 1:
        return
    count = len(tools)
    for resolution in active:
        initial = resolution.initial_tools
        if resolution.tools_assigned or (
            initial is not tools
            and (len(initial) != count or any(a is not b for a, b in zip(initial, tools)))  # noqa: B905
        ):
            for marked in active:
                marked.conflicted = True
            return


def traceable_dict(settings: ModelSettings) -> dict[str, Any]:
    """`ModelSettings.to_traceable_dict` with one `TypeAdapter` for the process."""
    global _settings_adapter
    if _settings_adapter is None:
        _settings_adapter = TypeAdapter(ModelSettings)
    payload = _settings_adapter.dump_python(settings, mode="json", include=set(_TRACEABLE_FIELDS))
    return {key: payload[key] for key in _TRACEABLE_FIELDS if key in payload}


def run_config(*args: Any, **kwargs: Any) -> RunConfig:
    """`RunConfig` for `agent_runner_helpers`: the default one is built once (it is only read
    there, for its default workflow name)."""
    global _default_run_config
    if args or kwargs:
        return RunConfig(*args, **kwargs)
    if _default_run_config is None:
        _default_run_config = RunConfig()
    return _default_run_config


def _users_of(module: types.ModuleType, name: str) -> set[str]:
    """The functions of `module` (and their nested code) that read the global `name`."""
    users: set[str] = set()

    def walk(function: str, code: types.CodeType) -> None:
        if name in code.co_names:
            users.add(function)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(function, const)

    for attribute, value in vars(module).items():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            walk(attribute, value.__code__)
    return users


def install() -> None:
    """Swap the SDK functions for the cached ones, in every SDK module that imported them."""
    for module in USERS_OF_IDENTITY_KEYS:
        if getattr(module, "_build_agent_identity_keys_by_id", None) not in (
            _original_keys_by_id,
            cached_identity_keys_by_id,
        ):
            raise RuntimeError(f"{module.__name__} no longer uses the SDK's identity keys")
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("agents") or module is None:
            continue
        if getattr(module, "_build_agent_identity_keys_by_id", None) is _original_keys_by_id:
            module._build_agent_identity_keys_by_id = cached_identity_keys_by_id  # type: ignore[attr-defined]
    tool_configuration._observe_tools = observe_tools
    if getattr(agent_runner_helpers, "RunConfig", None) is RunConfig:
        if _users_of(agent_runner_helpers, "RunConfig") != {"resolve_trace_settings"}:
            raise RuntimeError("agent_runner_helpers uses RunConfig beyond its default name")
        setattr(agent_runner_helpers, "RunConfig", run_config)  # noqa: B010
    setattr(ModelSettings, "to_traceable_dict", traceable_dict)  # noqa: B010 (a method swap)


def uninstall() -> None:
    """Put the SDK's own functions back (tests)."""
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("agents") or module is None:
            continue
        if getattr(module, "_build_agent_identity_keys_by_id", None) is cached_identity_keys_by_id:
            module._build_agent_identity_keys_by_id = _original_keys_by_id  # type: ignore[attr-defined]
    tool_configuration._observe_tools = _original_observe_tools
    setattr(agent_runner_helpers, "RunConfig", RunConfig)  # noqa: B010
    setattr(ModelSettings, "to_traceable_dict", _original_traceable_dict)  # noqa: B010
