"""Micro-benchmark of agent composition: the CPU a blocked-patterns check and a handoff add
to a run, and what agents without composition pay for its existence.

    .venv/bin/python -m bench.composition_micro [-n 2000]

In-process, one event loop, CPU = this process's user + system time per operation (median of
5 rounds of `n`). The SDK runs use `agents.testing.ScriptedModel` (no HTTP, no upstream), so
a handoff's cost is the SDK's handoff turn itself; the extra model call it makes costs what
any model call costs on the wire (the openai client's 1.3-1.7 ms, measured elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agents import RunConfig, Runner
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from gateway.agents.builder import AgentCache, build_agent, build_graph
from gateway.agents.guardrails import InputChecks, PatternSet
from gateway.runs.checks import check_input, check_output
from gateway.runs.handle import RunHandle
from gateway.runs.lifecycle import Run
from observability.tracing import install_trace_processor
from tenants.agent.spec import AgentSpec

PATTERNS = ["(?i)\\bssn\\b", r"\d{3}-\d{2}-\d{4}", "(?i)password\\s*[:=]", "(x+x+)+y"]
TEXT = "Hello, I would like to know the status of my order number 4711, thanks! "


def rounds(n: int, op: Callable[[], object]) -> float:
    """Median CPU µs of `op` over 5 rounds of `n` calls."""
    for _ in range(min(n, 200)):
        op()
    samples = []
    for _ in range(5):
        cpu = time.process_time()
        for _ in range(n):
            op()
        samples.append((time.process_time() - cpu) / n * 1e6)
    return statistics.median(samples)


async def arounds(n: int, op: Callable[[], Awaitable[object]]) -> float:
    for _ in range(min(n, 50)):
        await op()
    samples = []
    for _ in range(5):
        cpu = time.process_time()
        for _ in range(n):
            await op()
        samples.append((time.process_time() - cpu) / n * 1e6)
    return statistics.median(samples)


def show(name: str, cpu_us: float) -> None:
    print(f"  {name:<58} {cpu_us:9.2f} µs CPU", flush=True)


def patterns(n: int) -> None:
    print("blocked patterns (4 patterns as one RE2 set, incl. (x+x+)+y):")
    checks = PatternSet("input.blocked_patterns", PATTERNS)
    for chars in (200, 2_000, 100_000):
        text = (TEXT * (chars // len(TEXT) + 1))[:chars]
        show(
            f"one check of {chars} characters (no match)",
            rounds(max(n // (chars // 200), 20), lambda t=text: checks.first_match(t)),
        )
    guards = InputChecks(8000, checks)
    message = [{"role": "user", "content": TEXT * 3}]
    show(
        "input.max_chars + blocked_patterns on a 220-char message",
        rounds(n, lambda: guards.check(message)),
    )


async def sdk_runs(n: int) -> None:
    print("SDK run (ScriptedModel, no HTTP), whole Runner.run:")
    plain = build_agent("solo", 1, AgentSpec(tools=["calculator"]), default_model="m").agent
    nodes = {
        "triage": (1, AgentSpec(handoffs=["billing"], tools=["calculator"])),
        "billing": (1, AgentSpec()),
    }
    triage = build_graph("triage", nodes, default_model="m").agent

    def config(steps: list[ModelStep]) -> RunConfig:
        return RunConfig(model=ScriptedModel(steps), tracing_disabled=False)

    async def one_turn() -> Any:
        return await Runner.run(
            plain, "hi", run_config=config([ModelStep(output=[assistant_message("ok")])])
        )

    async def tool_turn() -> Any:
        steps = [
            ModelStep(output=[function_call("calculator", {"expression": "1+1"}, call_id="c")]),
            ModelStep(output=[assistant_message("2")]),
        ]
        return await Runner.run(plain, "hi", run_config=config(steps))

    async def handoff_turn() -> Any:
        steps = [
            ModelStep(output=[function_call("transfer_to_billing", {}, call_id="h")]),
            ModelStep(output=[assistant_message("billing here")]),
        ]
        result = await Runner.run(triage, "hi", run_config=config(steps))
        assert result.last_agent.name == "billing"
        return result

    one = await arounds(n // 4, one_turn)
    tool = await arounds(n // 4, tool_turn)
    hand = await arounds(n // 4, handoff_turn)
    show("1 model call, plain agent", one)
    show("2 model calls: a calculator call, then the answer", tool)
    show("2 model calls: a handoff to billing, billing answers", hand)
    show("=> a handoff turn vs a tool turn (SDK handoff cost)", hand - tool)


async def cache(n: int) -> None:
    print("AgentCache.get on a cache hit (every run pays it):")
    agents = AgentCache(ttl_s=3600, max_size=1000)
    plain = AgentSpec(tools=["calculator"])
    graph = {
        "triage": AgentSpec(handoffs=["billing", "refunds"]),
        "billing": AgentSpec(handoffs=["triage"]),
        "refunds": AgentSpec(),
    }
    agents._active.put(("t", "solo"), (1, plain, None))
    for name, spec in graph.items():
        agents._active.put(("t", name), (1, spec, None))
    db: Any = None  # never touched on a hit
    show(
        "agent without handoffs",
        await arounds(n, lambda: agents.get(db, "t", "solo", default_model="m")),
    )
    show(
        "triage -> billing, refunds (3-agent graph, a cycle)",
        await arounds(n, lambda: agents.get(db, "t", "triage", default_model="m")),
    )


def hot_path(n: int) -> None:
    """What a run of an agent without composition executes that did not exist before."""
    print("per run, agent without handoffs/guardrails/schema (the added branches):")
    built = build_agent("solo", 1, AgentSpec(tools=["calculator"]), default_model="m")

    class Result:
        final_output = "ok"
        last_agent = built.agent

    handle = object.__new__(RunHandle)
    handle.built = built
    handle.request_input = "hi"
    run = object.__new__(Run)
    run._handle = handle
    result: Any = Result()
    show(
        "enter_scope() + check_input() + check_output()",
        rounds(
            n * 10,
            lambda: (run.enter_scope(), check_input(handle), check_output(handle, result)),
        ),
    )


async def main(n: int) -> None:
    install_trace_processor()  # as the gateway does: spans -> metrics, nothing uploaded
    patterns(n)
    hot_path(n)
    await cache(n)
    await sdk_runs(n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.n))
