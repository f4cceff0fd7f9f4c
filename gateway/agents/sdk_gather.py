"""A cheaper `gather_with_cancel` for the Agents SDK's run loop, with the same behaviour.

The SDK gathers its hooks, prompts and tool executors with `gather_with_cancel`: a task per
awaitable, an `asyncio.gather` and an `asyncio.wait`, about 25-30 us each time, eight times
per turn of a plain run, even when there is nothing to wait for. Most of those gathers hold
a no-op (`noop_coroutine()`, a hook method the hooks class did not override) beside one real
coroutine, or nothing at all. This replacement:

- settles a coroutine that has not started and whose body does nothing but return None (the
  code is checked, once per code object) to None without running it: it cannot fail, have
  an effect or wait;
- settles two kinds of SDK coroutines the run loop gathers on every turn to what they return
  without waiting or any effect: `Agent.get_prompt` of an agent without a `prompt` (None:
  `PromptUtil.to_model_input(None, ...)`), gathered beside `get_system_prompt`; and the
  executors of the five hosted or local tool kinds (computer, custom, shell, apply_patch,
  local shell) given no calls (a new empty list: `results = []`, a loop over nothing),
  gathered beside the function tools' executor after every model response;
- awaits a single remaining coroutine in the current task, in a copy of the context (as a
  task would run it, so its context variables stay its own), with the same failure rules:
  `on_child_failure` sees the error it raises, never the caller's own cancellation, and a
  caller cancelled while it runs is cancelled even if the coroutine swallowed it;
- hands two or more remaining awaitables, or anything that is not a fresh coroutine, to the
  SDK's own function (they must run concurrently, as tasks).

It runs in the caller's task instead of a child task: `asyncio.timeout` and
`asyncio.current_task()` inside it see the caller's task, which is the task that waits for it.
`install` swaps it into every SDK module that imported the original (checked to be where this
SDK release keeps it); tests/unit/test_sdk_gather.py runs the same cases through both.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from agents import Agent
from agents.run_internal import tool_execution
from agents.util import _asyncio_tasks

_original = _asyncio_tasks.gather_with_cancel
_idle_codes: dict[types.CodeType, bool] = {}
"""Code object -> its body only returns None (bounded by the functions of the process)."""
_SKIPPED_OPS = frozenset({"RESUME", "RETURN_GENERATOR", "POP_TOP", "NOP", "CACHE"})
_GET_PROMPT = Agent.get_prompt.__code__
_NO_CALLS: dict[types.CodeType, str] = {
    tool_execution.execute_computer_actions.__code__: "actions",
    tool_execution.execute_custom_tool_calls.__code__: "calls",
    tool_execution.execute_shell_calls.__code__: "calls",
    tool_execution.execute_apply_patch_calls.__code__: "calls",
    tool_execution.execute_local_shell_calls.__code__: "calls",
}
"""Executors that return a new empty list when the list argument named here is empty."""
_UNSETTLED = object()


def returns_none_only(code: types.CodeType) -> bool:
    """True when the function of `code` does nothing but return None (a `pass` body, with or
    without a docstring)."""
    known = _idle_codes.get(code)
    if known is None:
        ops = [i for i in dis.get_instructions(code) if i.opname not in _SKIPPED_OPS]
        known = (len(ops) == 1 and ops[0].opname == "RETURN_CONST" and ops[0].argval is None) or (
            len(ops) == 2
            and ops[0].opname == "LOAD_CONST"
            and ops[0].argval is None
            and ops[1].opname == "RETURN_VALUE"
        )
        _idle_codes[code] = known
    return known


def settled(awaitable: object) -> Any:
    """What a coroutine not yet started is known to return without waiting or any effect (see
    the module's docstring), else `_UNSETTLED`."""
    if (
        type(awaitable) is not types.CoroutineType
        or inspect.getcoroutinestate(awaitable) != inspect.CORO_CREATED
    ):
        return _UNSETTLED
    code = awaitable.cr_code
    if code is _GET_PROMPT:
        agent = _argument(awaitable, "self")
        return None if type(agent) is Agent and agent.prompt is None else _UNSETTLED
    name = _NO_CALLS.get(code)
    if name is not None:
        calls = _argument(awaitable, name)
        return [] if type(calls) is list and not calls else _UNSETTLED
    return None if returns_none_only(code) else _UNSETTLED


def _argument(coro: types.CoroutineType[Any, Any, Any], name: str) -> Any:
    frame = coro.cr_frame
    return None if frame is None else frame.f_locals.get(name)


class _InContext:
    """Await a coroutine in the current task, each step in `context` (as a Task steps it)."""

    __slots__ = ("context", "coro")

    def __init__(self, coro: types.CoroutineType[Any, Any, Any], context: contextvars.Context):
        self.coro, self.context = coro, context

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self.coro, self.context.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:  # thrown in: handed to the coroutine
                value, error = None, exc


async def _await_one(
    coro: types.CoroutineType[Any, Any, Any],
    on_child_failure: Callable[[BaseException], None] | None,
) -> Any:
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        result = await _InContext(coro, contextvars.copy_context())
    except BaseException as error:
        caller_cancelled = task is not None and task.cancelling() > cancelling
        if on_child_failure is not None and not caller_cancelled:
            on_child_failure(error)
        raise
    if task is not None and task.cancelling() > cancelling:
        raise asyncio.CancelledError  # the caller was cancelled; the coroutine swallowed it
    return result


async def gather_with_cancel(
    *awaitables: Awaitable[Any],
    on_child_failure: Callable[[BaseException], None] | None = None,
) -> tuple[Any, ...]:
    """`agents.util._asyncio_tasks.gather_with_cancel` without tasks for coroutines whose
    result is known and for a single coroutine."""
    results = [settled(awaitable) for awaitable in awaitables]
    live = [i for i, result in enumerate(results) if result is _UNSETTLED]
    if len(live) == len(awaitables) and len(live) > 1:
        return await _original(*awaitables, on_child_failure=on_child_failure)
    for i, awaitable in enumerate(awaitables):
        if i not in live:
            awaitable.close()  # type: ignore[attr-defined]  # settled: never started
    if len(live) == 1 and type(awaitables[live[0]]) is types.CoroutineType:
        results[live[0]] = await _await_one(awaitables[live[0]], on_child_failure)  # type: ignore[arg-type]
    elif live:
        done = await _original(*(awaitables[i] for i in live), on_child_failure=on_child_failure)
        for i, result in zip(live, done, strict=True):
            results[i] = result
    return tuple(results)


def install() -> None:
    """Swap it into every SDK module that imported the SDK's own."""
    if getattr(_asyncio_tasks, "gather_with_cancel", None) not in (_original, gather_with_cancel):
        raise RuntimeError("agents.util._asyncio_tasks no longer has gather_with_cancel")
    for name, module in list(sys.modules.items()):
        if name.startswith("agents") and getattr(module, "gather_with_cancel", None) is _original:
            module.gather_with_cancel = gather_with_cancel  # type: ignore[attr-defined]


def uninstall() -> None:
    """Put the SDK's own back (tests, `GATEWAY_SDK_RUN_CACHE=false`)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("agents") and getattr(module, "gather_with_cancel", None) is (
            gather_with_cancel
        ):
            module.gather_with_cancel = _original  # type: ignore[attr-defined]
