"""Built-in tools, one SDK FunctionTool each, built once at import.

The catalogue of names lives in `gateway.core.catalog` (the control plane validates specs
against it); this module implements every entry. Each call is counted as a `builtin` tool call.
The functions are `async`: the SDK runs a plain function in a worker thread, a hop that costs
more than these bounded, microsecond computations themselves.
"""

from __future__ import annotations

import time

from agents import FunctionTool, function_tool

from gateway.agents.calculator import CalculatorError, evaluate
from gateway.core.catalog import BUILTIN_TOOLS
from gateway.core.clock import utcnow
from observability.metrics import record_tool_call


@function_tool(name_override="current_time", description_override=BUILTIN_TOOLS["current_time"])
async def current_time() -> str:
    """Current UTC time."""
    record_tool_call("current_time", "builtin", "ok", 0.0)
    return utcnow().isoformat(timespec="seconds").replace("+00:00", "Z")


@function_tool(name_override="calculator", description_override=BUILTIN_TOOLS["calculator"])
async def calculator(expression: str) -> str:
    """Evaluate arithmetic.

    Args:
        expression: The arithmetic expression, for example `2 + 3 * 4`.
    """
    started = time.perf_counter()
    try:
        answer = str(evaluate(expression))
    except CalculatorError as exc:
        record_tool_call("calculator", "builtin", "error", time.perf_counter() - started)
        return f"error: {exc}"
    record_tool_call("calculator", "builtin", "ok", time.perf_counter() - started)
    return answer


TOOLS: dict[str, FunctionTool] = {"current_time": current_time, "calculator": calculator}


def tools_for(names: list[str]) -> list[FunctionTool]:
    """The tool objects for the built-in names of a (validated) spec."""
    return [TOOLS[name] for name in names]
