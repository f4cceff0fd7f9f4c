"""`make bench`: (a) the mock LLM directly, (b) the SDK ceiling, (c) the gateway, (c') with
limits, (d) the gateway with every control on (chat completions, plain and streamed), (b1) the
SDK alone at one connection on (d)'s agent and API (what (d)'s added p50 cannot go below) and,
with `--litellm`, (e) the LiteLLM proxy on the same request, in one run.

The process under test runs on core 0; the load generator (wrk, else bench.loadgen in this
process) and, for (b) to (e), the mock LLM run on core 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import wrk
from bench.fullstack import FINISHED, POSTGRES_SERVER, run_full_points
from bench.litellm import run_litellm_points
from bench.loadgen import LoadResult
from bench.payloads import RESPONSES_BODY, RUN_BODY, UPSTREAM_CHAT_BODY
from bench.procs import can_pin
from bench.profile import print_summary as print_profile
from bench.profile import summarise
from bench.report import (
    MOCK,
    MOCK_CHAT,
    SDK,
    SDK_ALONE,
    Point,
    comparison,
    environment,
    print_comparison,
    print_summary,
    print_table,
    summary,
)

# Re-exported for the other bench modules (bench.kcalls, bench.fleet) that build on these.
from bench.rig import (  # noqa: F401
    BENCH_LIMITS,
    COMPLETED,
    LOAD,
    UNDER_TEST,
    Bench,
    Gateway,
    base_env,
    http_json,
    start_gateway,
    start_mock,
    start_redis,
)

RESULTS_DIR = Path(__file__).parent / "results"
UPSTREAM_CLIENTS = ("default", "lean", "openai")


def run_mock_points(bench: Bench, chat: bool) -> list[Point]:
    """(a) The mock LLM is the process under test (core 0); with `chat`, also (a'): the
    chat completions body the gateway sends upstream for the plain agent of (d)."""
    print("(a) mock LLM directly", flush=True)
    mock, port = start_mock(bench, UNDER_TEST)
    body = json.dumps(RESPONSES_BODY).encode()
    url = f"http://127.0.0.1:{port}/v1/responses"
    conns = bench.compare_connections
    try:
        points = [bench.point(MOCK, mock.pid, url, body, {}, c) for c in conns]
        if chat:
            chat_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            chat_body = json.dumps(UPSTREAM_CHAT_BODY).encode()
            points += [
                bench.point(MOCK_CHAT, mock.pid, chat_url, chat_body, {}, c, FINISHED)
                for c in conns
            ]
        return points
    finally:
        bench.forget(mock)


def run_sdk_ceiling(
    bench: Bench,
    mock_port: int,
    *,
    name: str = SDK,
    concurrency: int | None = None,
    api: str = "responses",
    agent: str = "bench",
) -> Point:
    """(b) bench.sdk_ceiling on core 0 against the mock on core 1 (default: the bench agent,
    `--sdk-concurrency` tasks, Responses API); (b1) is the SDK alone on (d)'s agent and API."""
    print(name, flush=True)
    env = base_env() | {
        "GATEWAY_ENV": "development",
        "GATEWAY_UPSTREAM_API": api,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "bench",
    }
    env |= bench.gateway_env  # the ceiling builds its provider with the gateway's code
    tasks = bench.sdk_concurrency if concurrency is None else concurrency
    command = [sys.executable, "-m", "bench.sdk_ceiling", "--concurrency"]
    command += [str(tasks), "--duration", str(bench.duration)]
    command += ["--warmup", str(bench.warmup), "--agent", agent]
    if bench.pin:
        command = ["taskset", "-c", str(UNDER_TEST), *command, "--core", str(UNDER_TEST)]
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=bench.duration + bench.warmup + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sdk_ceiling failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    fields = LoadResult.__dataclass_fields__
    load = LoadResult(**{k: v for k, v in report.items() if k in fields})
    cpu = {k: report.get(k) for k in ("cpu_s", "wall_s", "core_other_pct")}
    if report.get("failures"):
        print(f"  failures: {report['failures']}", file=sys.stderr)
    print(f"  {name} k={load.connections}: {load.rps:.0f} runs/s", flush=True)
    return Point(name, load, cpu)


def run_gateway_points(
    bench: Bench, mock_port: int, *, profile: bool
) -> tuple[list[Point], dict[str, Any]]:
    """(c) The gateway under load at each connection count, then the usage check."""
    print("(c) gateway", flush=True)
    gateway = start_gateway(bench, mock_port)
    pid, url, headers = gateway.child.pid, gateway.run_url, gateway.headers
    body = json.dumps(RUN_BODY).encode()
    points = [
        bench.point("(c) gateway", pid, url, body, headers, c, expect=COMPLETED)
        for c in bench.connections
    ]
    if profile:
        points.append(profile_gateway(bench, pid, url, body, headers))
    time.sleep(2.0)  # usage is flushed every 0.5 s
    recorded = gateway.recorded_runs()
    expected = sum(p.ok_total for p in points)
    usage = {"recorded_runs": recorded, "successful_requests": expected, "ok": recorded >= expected}
    bench.forget(gateway.child)  # (c') runs alone on core 0
    return points, usage


def run_limits_points(bench: Bench, mock_port: int, redis_url: str) -> list[Point]:
    """(c') The gateway with every limit and quota on (Redis), else as (c)."""
    print("(c') gateway + limits (Redis)", flush=True)
    if redis_url == "private":
        redis_url = start_redis(bench)
    gateway = start_gateway(bench, mock_port, limits=BENCH_LIMITS, redis_url=redis_url)
    pid, url, headers = gateway.child.pid, gateway.run_url, gateway.headers
    body = json.dumps(RUN_BODY).encode()
    points = [
        bench.point("(c') gateway + limits (Redis)", pid, url, body, headers, c, expect=COMPLETED)
        for c in bench.connections
    ]
    bench.forget(gateway.child)
    return points


def print_limits_cost(points: list[Point]) -> dict[str, Any]:
    """What the limit and quota checks add per request: (c') minus (c) at each connection count."""
    base = {p.load.connections: p for p in points if p.name == "(c) gateway"}
    rows: dict[str, Any] = {}
    for p in points:
        if not p.name.startswith("(c')") or p.load.connections not in base:
            continue
        b = base[p.load.connections]

        def delta(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else x - y

        rows[str(p.load.connections)] = {
            "p50_ms_added": delta(p.load.p50_ms, b.load.p50_ms),
            "p99_ms_added": delta(p.load.p99_ms, b.load.p99_ms),
            "cpu_ms_per_request_added": delta(p.cpu_ms_per_request, b.cpu_ms_per_request),
        }
    if rows:
        print("limits cost ((c') - (c)):")
        for conns, row in rows.items():
            cells = ", ".join(f"{k} {v:+.3f}" for k, v in row.items() if v is not None)
            print(f"  {conns:>4} conns: {cells}")
    return rows


def profile_gateway(
    bench: Bench,
    pid: int,
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes | None = COMPLETED,
) -> Point:
    """py-spy (core 1) records the gateway under 32-connection load; not a table row."""
    assert bench.profile is not None
    seconds = max(1, round(bench.duration))
    spy = str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "-o", str(bench.profile), "--pid", str(pid)]
    # --gil: only samples holding the GIL (py-spy's idle detection misses threads blocked in
    # queue/condition waits, e.g. aiosqlite's worker thread, anyio's thread pool).
    command += ["--duration", str(seconds), "--format", "speedscope", "--gil"]
    if bench.pin:
        command = ["taskset", "-c", str(LOAD), *command]
    print(f"  profiling the gateway for {seconds} s at 32 connections", flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        load = bench.drive(url, body, headers, 32, seconds + 1, expect)
        _, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    return Point("(profile) gateway", load)


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before each point (3)")
    parser.add_argument("--connections", default="1,32,128", help="gateway points, comma separated")
    parser.add_argument("--sdk-concurrency", type=int, default=32, help="tasks of the SDK ceiling")
    parser.add_argument("--quick", action="store_true", help="smoke check: 3 s points, 1 s warm-up")
    parser.add_argument("--redis-url", default=None, help="GATEWAY_REDIS_URL for the gateway")
    parser.add_argument(
        "--limits-redis-url",
        default="private",
        help="Redis of the (c') point (limits on): 'private' (default) starts a redis-server "
        "on the load core; a URL uses that Redis; empty: skip (c')",
    )
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_SERVER,
        help="PostgreSQL server of the (d) point: a fresh bench_<hex> database is created on it, "
        "migrated and dropped at the end; empty: skip (d)",
    )
    parser.add_argument(
        "--litellm",
        action="store_true",
        help="also measure (e): the LiteLLM proxy (installed once into bench/.scratch/) on the "
        "same chat completions request as (d)",
    )
    parser.add_argument(
        "--upstream-client",
        choices=UPSTREAM_CLIENTS,
        default="default",
        help="GATEWAY_UPSTREAM_CLIENT of every gateway process (and the SDK ceiling); "
        "default: leave it unset (the gateway's own default)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        type=env_pair,
        default=[],
        metavar="NAME=VALUE",
        help="a setting of every gateway process (and the SDK ceiling), e.g. "
        "GATEWAY_SDK_RUN_CACHE=false; repeatable",
    )
    parser.add_argument(
        "--loadgen", action="store_true", help="use bench.loadgen even if wrk exists"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also record a py-spy speedscope profile of the gateway at 32 connections here: "
        "of (d), every control on, when it runs, else of (c)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOAD})  # this process (and the Python load generator): core 1
    else:
        print("warning: cores 0 and 1 are not both available; running unpinned", file=sys.stderr)
    use_wrk = wrk.available() and not args.loadgen
    started = datetime.now(UTC)
    gateway_env = dict(args.gateway_env)
    if args.upstream_client != "default":
        gateway_env["GATEWAY_UPSTREAM_CLIENT"] = args.upstream_client
    print(
        f"bench: {args.duration:g} s per point after {args.warmup:g} s warm-up; "
        f"load generator: {'wrk' if use_wrk else 'bench.loadgen (asyncio/aiohttp)'}; "
        f"upstream client: {args.upstream_client}",
        flush=True,
    )
    points: list[Point] = []
    usage: dict[str, Any] = {}
    full_usage: dict[str, Any] | None = None
    litellm: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        bench = Bench(
            duration=args.duration,
            warmup=args.warmup,
            connections=[int(c) for c in args.connections.split(",") if c.strip()],
            sdk_concurrency=args.sdk_concurrency,
            redis_url=args.redis_url,
            pin=pin,
            tmp=Path(tmp),
            use_wrk=use_wrk,
            profile=args.profile,
            gateway_env=gateway_env,
        )
        try:
            points += run_mock_points(bench, chat=bool(args.postgres_url))
            _, mock_port = start_mock(bench, LOAD)
            points.append(run_sdk_ceiling(bench, mock_port))
            # --profile records (d), the point compared with LiteLLM, when it runs; else (c).
            profile_full = bench.profile is not None and bool(args.postgres_url)
            gateway_points, usage = run_gateway_points(
                bench, mock_port, profile=bench.profile is not None and not profile_full
            )
            points += gateway_points
            if args.limits_redis_url:
                points += run_limits_points(bench, mock_port, args.limits_redis_url)
            if args.postgres_url:
                # (b1): what the SDK alone adds at one connection, on (d)'s agent and API.
                points.append(
                    run_sdk_ceiling(
                        bench,
                        mock_port,
                        name=SDK_ALONE,
                        concurrency=1,
                        api="chat_completions",
                        agent="plain",
                    )
                )
                redis_url = args.limits_redis_url or "private"
                full, full_usage = run_full_points(
                    bench,
                    mock_port,
                    redis_url,
                    args.postgres_url,
                    profile=partial(profile_gateway, bench, expect=FINISHED)
                    if profile_full
                    else None,
                )
                points += full
            if args.litellm:
                litellm_points, litellm = run_litellm_points(bench, mock_port)
                points += litellm_points
        except BaseException:
            for child in bench.children:
                print(f"--- {child.name} log tail ---\n{child.tail()}", file=sys.stderr)
            raise
        finally:
            bench.stop_all()

    profiled = [p for p in points if p.name.startswith("(profile)")]
    points = [p for p in points if p not in profiled]
    print()
    print_table(points)
    print()
    result = summary(points, usage, full_usage)
    print_summary(result)
    limits_cost = print_limits_cost(points)
    compared = comparison(points)
    print_comparison(compared)
    if litellm is not None and litellm.get("error"):
        print(f"(e) LiteLLM skipped: {litellm['error']}")
    profile: dict[str, Any] | None = None
    if args.profile is not None and profiled:
        profile = summarise(args.profile)
        profile["load"] = profiled[0].load.as_dict()
        print(f"\nprofile of the gateway at 32 connections: {args.profile}")
        print_profile(profile)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "started_at": started.isoformat(),
                "argv": sys.argv,
                "options": vars(args),
                "load_generator": "wrk" if use_wrk else "bench.loadgen",
                "upstream_client": args.upstream_client,
                "pinned": pin,
                "environment": environment(),
                "points": [p.as_dict() for p in points],
                "summary": result,
                "limits_cost": limits_cost,
                "comparison": compared,
                "litellm": litellm,
                "profile": profile,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {out}")
    if not result["correctness"]["pass"]:
        return 1
    verdicts = [*result.values(), *compared.values()]
    if args.strict and not all(v.get("pass", True) for v in verdicts):
        return 1
    if args.strict and litellm is not None and litellm.get("error"):
        return 1  # a comparison asked for and not made
    return 0


if __name__ == "__main__":
    sys.exit(main())
