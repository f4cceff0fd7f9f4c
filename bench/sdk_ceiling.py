"""The SDK ceiling: `Runner.run` of the bench agent in a plain asyncio (uvloop) loop.

The agent is built by `gateway.agents.builder.build_agent` from the same spec the gateway
serves, the model provider comes from the gateway's `ProviderRegistry` (cached AsyncOpenAI
on the configured transport), the RunConfig is shaped like the gateway's, and our trace
processor is installed first (SDK spans only where the gateway makes them: an exporter or
debug span logs). No HTTP server, auth, limits, usage or metrics: this is what the SDK alone
costs, the upper bound of the gateway's throughput on one core. `--agent plain` runs the agent
of `make bench`'s (d) point (instructions only) instead of the bench agent (with tools).

    OPENAI_BASE_URL=http://127.0.0.1:9100/v1 OPENAI_API_KEY=bench \
        taskset -c 0 python -m bench.sdk_ceiling --concurrency 32 --duration 15

Prints one JSON object (a LoadResult plus `cpu_s` and `cpu_ms_per_request`) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from agents import RunConfig, Runner

from bench.loadgen import LoadResult, percentile, run_sync
from bench.payloads import AGENT_NAME, AGENT_SPEC, PLAIN_AGENT_NAME, PLAIN_AGENT_SPEC, PROMPT
from bench.procs import CpuWindow
from gateway.agents.builder import BuiltAgent, build_agent
from gateway.agents.providers import ProviderRegistry
from gateway.core.config import get_settings
from gateway.core.gc_tuning import tune_gc
from observability.tracing import install_trace_processor, spans_wanted
from tenants.agent.spec import AgentSpec

RUN_TIMEOUT_S = 30.0


async def _phase(
    built: BuiltAgent, registry: ProviderRegistry, concurrency: int, duration_s: float
) -> tuple[LoadResult, list[str]]:
    """K tasks running back to back until the deadline; runs finished after it don't count."""
    result = LoadResult(tool="sdk", connections=concurrency, duration_s=duration_s)
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while (started := time.perf_counter()) < deadline:
            run_config = RunConfig(
                model=built.model,
                model_provider=registry.default(),
                workflow_name=f"bench/{built.name}",
                tracing_disabled=not spans_wanted(),
            )
            try:
                async with asyncio.timeout(RUN_TIMEOUT_S):
                    run = await Runner.run(
                        built.agent, PROMPT, max_turns=built.max_turns, run_config=run_config
                    )
                output_ok = bool(run.final_output)
            except Exception as exc:
                if len(failures) < 5:
                    failures.append(repr(exc))
                result.socket_errors += 1
                await asyncio.sleep(0.01)
                continue
            finished = time.perf_counter()
            if finished > deadline:
                return
            result.requests += 1
            latencies.append(finished - started)
            if not output_ok:
                result.incorrect += 1

    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(concurrency))), duration_s + RUN_TIMEOUT_S + 5
    )
    latencies.sort()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    result.p50_ms = p50 * 1000 if p50 is not None else None
    result.p99_ms = p99 * 1000 if p99 is not None else None
    return result, failures


AGENTS = {"bench": (AGENT_NAME, AGENT_SPEC), "plain": (PLAIN_AGENT_NAME, PLAIN_AGENT_SPEC)}


async def measure(
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    core: int | None = None,
    agent: str = "bench",
) -> dict[str, Any]:
    """Warm up, then measure K concurrent run loops; `core`: the core we are pinned to."""
    install_trace_processor()
    settings = get_settings()
    registry = ProviderRegistry(settings)
    name, agent_spec = AGENTS[agent]
    spec = AgentSpec.model_validate(agent_spec)
    built = build_agent(name, 1, spec, default_model=settings.default_model)
    # The same collector tuning as a gateway worker, so the ceiling stays a fair comparison.
    tune_gc(settings.gc_gen0_threshold)
    try:
        if warmup_s > 0:
            await _phase(built, registry, concurrency, warmup_s)
        window = CpuWindow(os.getpid(), core)
        result, failures = await _phase(built, registry, concurrency, duration_s)
        cpu = window.close()
    finally:
        await registry.close()
    return {
        **result.as_dict(),
        **cpu,
        "cpu_ms_per_request": (cpu["cpu_s"] or 0) * 1000 / result.requests
        if result.requests
        else None,
        "failures": failures,
        "transport": settings.upstream_http_client,
        "upstream_api": settings.upstream_api,
        "agent": agent,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_ceiling", description=__doc__)
    parser.add_argument("--base-url", help="upstream base URL (default: OPENAI_BASE_URL)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--core", type=int, help="the core this process is pinned to")
    parser.add_argument("--agent", choices=sorted(AGENTS), default="bench", help="which agent")
    args = parser.parse_args(argv)
    if args.base_url:
        os.environ["OPENAI_BASE_URL"] = args.base_url
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    get_settings.cache_clear()

    report = run_sync(measure(args.concurrency, args.duration, args.warmup, args.core, args.agent))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
