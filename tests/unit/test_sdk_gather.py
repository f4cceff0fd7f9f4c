"""The SDK's gather without tasks for no-ops and single coroutines: each case through the SDK's
own `gather_with_cancel` and through ours, with the same outcome."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import agents.run_internal.run_loop as run_loop
import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.lifecycle import AgentHooks, RunHooks
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.util._coro import noop_coroutine

from gateway.agents import sdk_gather
from gateway.agents.sdk_gather import gather_with_cancel, returns_none_only

GATHERS = pytest.mark.parametrize(
    "gather", [sdk_gather._original, gather_with_cancel], ids=["sdk", "ours"]
)
Gather = Callable[..., Awaitable[tuple[Any, ...]]]
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outer")


async def value(v: Any, delay: float = 0.0) -> Any:
    await asyncio.sleep(delay)
    return v


async def fails(delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    raise ValueError("boom")


def test_only_bodies_that_return_none_count_as_idle() -> None:
    async def passes(a: int) -> None:
        """Docstring only."""

    async def counts(log: list[int]) -> None:
        log.append(1)

    async def returns_one() -> int:
        return 1

    assert returns_none_only(passes.__code__)
    assert returns_none_only(noop_coroutine.__code__)
    assert returns_none_only(RunHooks.on_agent_start.__code__)
    assert not returns_none_only(counts.__code__)
    assert not returns_none_only(returns_one.__code__)
    assert not returns_none_only(value.__code__)


@GATHERS
async def test_results_in_order_with_no_ops(gather: Gather) -> None:
    assert await gather() == ()
    assert await gather(noop_coroutine()) == (None,)
    assert await gather(noop_coroutine(), value(7)) == (None, 7)
    assert await gather(value(1, 0.01), noop_coroutine(), value(2)) == (1, None, 2)
    hooks = RunHooks[Any]()
    assert await gather(
        hooks.on_agent_start(None, None), AgentHooks[Any]().on_start(None, None)
    ) == (  # type: ignore[arg-type]
        None,
        None,
    )
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(5)
    assert await gather(future) == (5,)


@GATHERS
async def test_a_coroutine_that_does_something_runs(gather: Gather) -> None:
    log: list[str] = []

    async def side_effect() -> None:
        log.append("ran")

    assert await gather(side_effect(), noop_coroutine()) == (None, None)
    assert log == ["ran"]


@GATHERS
async def test_context_changes_stay_in_the_child(gather: Gather) -> None:
    async def sets() -> str:
        VAR.set("inner")
        await asyncio.sleep(0)
        return VAR.get()

    assert await gather(sets()) == ("inner",)
    assert VAR.get() == "outer"


@GATHERS
async def test_a_failure_reaches_on_child_failure_and_the_caller(gather: Gather) -> None:
    seen: list[BaseException] = []
    with pytest.raises(ValueError, match="boom"):
        await gather(fails(0.001), noop_coroutine(), on_child_failure=seen.append)
    assert [type(e) for e in seen] == [ValueError]
    with pytest.raises(ValueError, match="boom"):
        await gather(fails(), value(1, 0.01), on_child_failure=seen.append)
    assert [type(e) for e in seen] == [ValueError, ValueError]


@GATHERS
async def test_cancelling_the_caller_cancels_the_child_and_not_on_child_failure(
    gather: Gather,
) -> None:
    seen: list[BaseException] = []
    cleaned: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0)  # cleanup that waits, as a drain would let it
            cleaned.append("done")

    task = asyncio.ensure_future(gather(slow(), noop_coroutine(), on_child_failure=seen.append))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["done"] and seen == []


@GATHERS
async def test_a_child_that_swallows_the_cancellation_still_leaves_the_caller_cancelled(
    gather: Gather,
) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "never"

    task = asyncio.ensure_future(gather(stubborn()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@GATHERS
async def test_a_timeout_inside_the_child_times_the_child_out(gather: Gather) -> None:
    async def bounded() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "never"

    assert await gather(bounded(), noop_coroutine()) == ("timed out", None)


@GATHERS
async def test_several_coroutines_run_concurrently(gather: Gather) -> None:
    started = time.perf_counter()
    assert await gather(value(1, 0.05), value(2, 0.05), value(3, 0.05)) == (1, 2, 3)
    assert time.perf_counter() - started < 0.12


def test_install_reaches_the_run_loop_and_uninstall_restores_it() -> None:
    sdk_gather.install()
    try:
        assert run_loop.gather_with_cancel is gather_with_cancel
    finally:
        sdk_gather.uninstall()
    assert run_loop.gather_with_cancel is sdk_gather._original


@function_tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


class CountingHooks(RunHooks[Any]):
    def __init__(self) -> None:
        self.events: list[str] = []

    async def on_llm_start(self, *args: Any) -> None:
        self.events.append("llm_start")

    async def on_llm_end(self, *args: Any) -> None:
        self.events.append("llm_end")

    async def on_tool_end(self, *args: Any) -> None:
        self.events.append("tool_end")


async def _tool_run() -> tuple[Any, list[str], list[Any]]:
    model = ScriptedModel(
        [
            ModelStep(output=[function_call("add", {"a": 2, "b": 3}, call_id="c1")]),
            ModelStep(output=[assistant_message("five")]),
        ]
    )
    agent = Agent(name="calc", instructions="Add.", tools=[add], model=model)
    hooks = CountingHooks()
    result = await Runner.run(
        agent, "2+3?", hooks=hooks, run_config=RunConfig(tracing_disabled=True)
    )
    return result.final_output, hooks.events, [item.type for item in result.new_items]


async def test_a_run_with_tools_and_hooks_is_the_same_with_ours() -> None:
    stock = await _tool_run()
    sdk_gather.install()
    try:
        ours = await _tool_run()
    finally:
        sdk_gather.uninstall()
    assert ours == stock
    assert stock[0] == "five" and stock[1].count("llm_start") == 2 and "tool_end" in stock[1]


async def test_get_prompt_of_an_agent_without_a_prompt_is_settled_without_running() -> None:
    """The run loop gathers `get_system_prompt` and `get_prompt` on every turn: without a
    prompt the latter is settled to None (what it returns), so one coroutine remains and no
    task is made; an agent with a prompt still runs it."""
    from agents import RunContextWrapper

    context: RunContextWrapper[Any] = RunContextWrapper(context=None)
    plain = Agent(name="plain", instructions="Be brief.")
    assert await plain.get_prompt(context) is None  # what the settle assumes

    def idle(agent: Agent[Any]) -> bool:
        coro = agent.get_prompt(context)
        try:
            return sdk_gather.settled(coro) is None
        finally:
            coro.close()

    class Custom(Agent[Any]):
        pass

    prompted = Agent(name="prompted", prompt={"id": "pmpt_1", "version": "2"})
    assert idle(plain) and not idle(prompted) and not idle(Custom(name="custom"))

    tasks: list[Any] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    loop.set_task_factory(lambda lp, coro, **kw: tasks.append(coro) or asyncio.Task(coro, loop=lp))
    try:
        for agent in (plain, prompted):
            ours = await gather_with_cancel(
                agent.get_system_prompt(context), agent.get_prompt(context)
            )
            sdk = await sdk_gather._original(
                agent.get_system_prompt(context), agent.get_prompt(context)
            )
            assert ours == sdk
        made = len(tasks)
    finally:
        loop.set_task_factory(factory)
    # the SDK's gathers made two tasks each; ours only for the agent with a prompt
    assert made == 2 + 2 + 2


async def test_the_executors_of_tool_kinds_without_calls_are_settled_to_empty_lists() -> None:
    """After every model response the SDK gathers six executors, five of them for hosted or
    local tool kinds a gateway agent never has calls for: given no calls each returns a new
    empty list, so ours settles them (only the function tools' executor runs)."""
    from agents.run_internal import tool_execution

    executors = {
        tool_execution.execute_computer_actions: "actions",
        tool_execution.execute_custom_tool_calls: "calls",
        tool_execution.execute_shell_calls: "calls",
        tool_execution.execute_apply_patch_calls: "calls",
        tool_execution.execute_local_shell_calls: "calls",
    }
    common: dict[str, Any] = {"public_agent": Agent(name="a"), "context_wrapper": None}
    common |= {"hooks": RunHooks(), "config": RunConfig()}
    for executor, name in executors.items():
        assert await executor(**common, **{name: []}) == []  # what the settle assumes
        coro = executor(**common, **{name: []})
        assert sdk_gather.settled(coro) == []
        coro.close()
        coro = executor(**common, **{name: [object()]})
        assert sdk_gather.settled(coro) is sdk_gather._UNSETTLED
        coro.close()
