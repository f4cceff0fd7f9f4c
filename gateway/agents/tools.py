"""Built-in tools, one SDK FunctionTool each, built once at import.

The catalogue of names lives in `gateway.core.catalog` (the control plane validates specs
against it); this module implements every entry. Each call is counted as a `builtin` tool call.
The functions are `async`: the SDK runs a plain function in a worker thread, a hop that costs
more than these bounded, microsecond computations themselves.
"""

from __future__ import annotations

import time
from typing import Any

import jsonschema
from agents import FunctionTool, ModelBehaviorError, RunContextWrapper, function_tool
from agents.tool_context import ToolContext

from gateway.agents.calculator import CalculatorError, evaluate
from gateway.core.catalog import BUILTIN_TOOLS
from gateway.core.clock import utcnow
from gateway.tools.http import ToolCallFailed, parse_arguments
from observability.metrics import record_tool_call


def failed_call(context: RunContextWrapper[Any], error: Exception) -> str:
    """The output of a built-in call that raised, counted under its status. The SDK raises
    before the function runs when the arguments are not JSON or break the tool's parameters:
    the model gets the reason (`error: invalid arguments: …`, as from an HTTP tool), not
    "An error occurred while running the tool"."""
    name = context.tool_name if isinstance(context, ToolContext) else "unknown"
    tool = TOOLS.get(name)
    if isinstance(error, ModelBehaviorError) and tool is not None:
        assert isinstance(context, ToolContext)
        output = "error: invalid arguments"
        try:
            parse_arguments(VALIDATORS[name], context.tool_arguments)
        except ToolCallFailed as failed:
            output = failed.output
        record_tool_call(name, "builtin", "invalid_arguments", 0.0)
        return output
    record_tool_call(name, "builtin", "error", 0.0)
    return "error: the tool failed"


@function_tool(
    name_override="current_time",
    description_override=BUILTIN_TOOLS["current_time"],
    failure_error_function=failed_call,
)
async def current_time() -> str:
    """Current UTC time."""
    record_tool_call("current_time", "builtin", "ok", 0.0)
    return utcnow().isoformat(timespec="seconds").replace("+00:00", "Z")


@function_tool(
    name_override="calculator",
    description_override=BUILTIN_TOOLS["calculator"],
    failure_error_function=failed_call,
)
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
VALIDATORS = {
    name: jsonschema.Draft202012Validator(tool.params_json_schema) for name, tool in TOOLS.items()
}


def tools_for(names: list[str]) -> list[FunctionTool]:
    """The tool objects for the built-in names of a (validated) spec."""
    return [TOOLS[name] for name in names]
