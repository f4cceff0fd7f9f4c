"""`make bench`: (a) the mock LLM directly, (b) the SDK ceiling, (c) the gateway, in one run.

The process under test runs on core 0; the load generator (wrk, else bench.loadgen in this
process) and, for (b) and (c), the mock LLM run on core 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench import wrk
from bench.loadgen import LoadResult, run_load, run_sync
from bench.payloads import AGENT_NAME, AGENT_SPEC, RESPONSES_BODY, RUN_BODY
from bench.procs import LOOPBACK, PROXY_VARS, Child, CpuWindow, can_pin, free_port
from bench.profile import print_summary as print_profile
from bench.profile import summarise
from bench.report import Point, environment, print_summary, print_table, summary

RESULTS_DIR = Path(__file__).parent / "results"
COMPLETED = b'"status":"completed"'
UNDER_TEST, LOAD = 0, 1  # cores


@dataclass
class Bench:
    """Options and shared state of one benchmark run."""

    duration: float
    warmup: float
    connections: list[int]
    sdk_concurrency: int
    redis_url: str | None
    pin: bool
    tmp: Path
    use_wrk: bool
    profile: Path | None = None
    children: list[Child] = field(default_factory=list)

    def core(self, core: int) -> int | None:
        return core if self.pin else None

    def drive(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        connections: int,
        seconds: float,
        expect: bytes | None,
    ) -> LoadResult:
        if self.use_wrk:
            cpus = str(LOAD) if self.pin else None
            return wrk.run_wrk(
                url,
                body,
                headers,
                connections=connections,
                duration_s=seconds,
                expect=expect,
                cpus=cpus,
            )
        return run_sync(
            run_load(url, body, headers, connections=connections, duration_s=seconds, expect=expect)
        )

    def point(
        self,
        name: str,
        pid: int,
        url: str,
        body: bytes,
        headers: dict[str, str],
        connections: int,
        expect: bytes | None = None,
    ) -> Point:
        """Warm up, then measure one point with the CPU time of `pid` around it."""
        warm = self.drive(url, body, headers, connections, self.warmup, expect)
        window = CpuWindow(pid, self.core(UNDER_TEST))
        load = self.drive(url, body, headers, connections, self.duration, expect)
        point = Point(name, load, window.close(), warmup_ok=warm.ok)
        print(f"  {name} c={connections}: {load.rps:.0f} req/s, errors {load.errors}", flush=True)
        return point

    def start(self, name: str, command: list[str], env: dict[str, str], core: int) -> Child:
        child = Child(
            name, command, env=env, log_path=self.tmp / f"{name}.log", cpu=self.core(core)
        )
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {child.name}: {exc}", file=sys.stderr)
        self.children.clear()


def base_env() -> dict[str, str]:
    """Our environment without inherited GATEWAY_*/OPENAI_* settings or proxies."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OPENAI_")) and k.lower() not in PROXY_VARS
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_mock(bench: Bench, core: int) -> tuple[Child, int]:
    port = free_port()
    mock = bench.start(
        f"mock-core{core}",
        [sys.executable, "-m", "gateway.mock_llm", "--host", "127.0.0.1", "--port", str(port)],
        base_env(),
        core,
    )
    mock.wait_http(f"http://127.0.0.1:{port}/healthz")
    return mock, port


def http_json(method: str, url: str, token: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with LOOPBACK.open(request, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: {exc.code} {exc.read()[:500]!r}") from exc


def run_mock_points(bench: Bench) -> list[Point]:
    """(a) The mock LLM is the process under test (core 0)."""
    print("(a) mock LLM directly", flush=True)
    mock, port = start_mock(bench, UNDER_TEST)
    body = json.dumps(RESPONSES_BODY).encode()
    url = f"http://127.0.0.1:{port}/v1/responses"
    conns = [c for c in bench.connections if c <= 32] or bench.connections[:1]
    try:
        return [bench.point("(a) mock LLM", mock.pid, url, body, {}, c) for c in conns]
    finally:
        mock.stop()
        bench.children.remove(mock)


def run_sdk_ceiling(bench: Bench, mock_port: int) -> Point:
    """(b) bench.sdk_ceiling on core 0 against the mock on core 1."""
    print("(b) SDK ceiling", flush=True)
    env = base_env() | {
        "GATEWAY_ENV": "development",
        "GATEWAY_UPSTREAM_API": "responses",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "bench",
    }
    command = [sys.executable, "-m", "bench.sdk_ceiling", "--concurrency"]
    command += [str(bench.sdk_concurrency), "--duration", str(bench.duration)]
    command += ["--warmup", str(bench.warmup)]
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
    print(f"  (b) SDK ceiling k={load.connections}: {load.rps:.0f} runs/s", flush=True)
    return Point("(b) SDK ceiling", load, cpu)


@dataclass
class Gateway:
    """A started, seeded gateway: its process, run URL and tenant key."""

    child: Child
    base: str
    key: str

    @property
    def run_url(self) -> str:
        return f"{self.base}/v1/agents/{AGENT_NAME}/runs"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def start_gateway(
    bench: Bench,
    mock_port: int,
    *,
    limits: dict[str, int] | None = None,
    redis_url: str | None = None,
) -> Gateway:
    """Migrate a fresh SQLite DB, serve the gateway on core 0, seed it via the admin API."""
    admin_token = "bench-" + secrets.token_urlsafe(24)
    env = base_env() | {
        "GATEWAY_ENV": "development",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{bench.tmp}/bench-{secrets.token_hex(3)}.db",
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_UPSTREAM_API": "responses",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "bench",
    }
    if redis_url or bench.redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url or bench.redis_url or ""
        env["GATEWAY_REDIS_KEY_PREFIX"] = f"bench:{secrets.token_hex(4)}:"
    gateway_bin = str(Path(sys.executable).with_name("gateway"))
    if not Path(gateway_bin).exists():
        gateway_bin = shutil.which("gateway") or "gateway"
    subprocess.run(
        [gateway_bin, "db", "upgrade"], env=env, check=True, timeout=120, capture_output=True
    )
    port = free_port()
    command = [gateway_bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    child = bench.start("gateway", command, env, UNDER_TEST)
    base = f"http://127.0.0.1:{port}"
    child.wait_http(f"{base}/healthz")

    tenant = http_json(
        "POST",
        f"{base}/admin/tenants",
        admin_token,
        {"slug": "bench", "name": "bench", "limits": limits or {}},
    )
    tenant_url = f"{base}/admin/tenants/{tenant['id']}"
    key = http_json("POST", f"{tenant_url}/keys", admin_token, {"name": "bench"})["key"]
    http_json("PUT", f"{tenant_url}/agents/{AGENT_NAME}", admin_token, AGENT_SPEC)
    return Gateway(child, base, key)


def run_gateway_points(bench: Bench, mock_port: int) -> tuple[list[Point], dict[str, Any]]:
    """(c) The gateway under load at each connection count, then the usage check."""
    print("(c) gateway", flush=True)
    gateway = start_gateway(bench, mock_port)
    pid, url, headers = gateway.child.pid, gateway.run_url, gateway.headers
    body = json.dumps(RUN_BODY).encode()
    points = [
        bench.point("(c) gateway", pid, url, body, headers, c, expect=COMPLETED)
        for c in bench.connections
    ]
    if bench.profile is not None:
        points.append(profile_gateway(bench, pid, url, body, headers))
    time.sleep(2.0)  # usage is flushed every 0.5 s
    report = http_json("GET", f"{gateway.base}/v1/usage?group_by=agent", gateway.key)
    recorded = sum(row["runs"] for row in report["data"] if row.get("agent") == AGENT_NAME)
    expected = sum(p.load.ok + p.warmup_ok for p in points)
    usage = {"recorded_runs": recorded, "successful_requests": expected, "ok": recorded >= expected}
    gateway.child.stop()  # (c') runs alone on core 0
    return points, usage


# (c') limits on, high enough never to refuse: every request and model call pays the checks.
BENCH_LIMITS = {
    "requests_per_minute": 10**9,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
    "max_concurrent_runs": 10**6,
}


def start_redis(bench: Bench) -> str:
    """A private `redis-server` on the load core (as the mock LLM): in production Redis runs
    on its own host, never on the gateway's core. Falls back to the local Redis on 6379."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("  redis-server not found: using redis://127.0.0.1:6379/0", flush=True)
        return "redis://127.0.0.1:6379/0"
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(bench.tmp)]
    bench.start("redis", command, base_env(), LOAD)
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    return f"redis://127.0.0.1:{port}/0"


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
    gateway.child.stop()
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
    bench: Bench, pid: int, url: str, body: bytes, headers: dict[str, str]
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
        load = bench.drive(url, body, headers, 32, seconds + 1, COMPLETED)
        _, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
    return Point("(profile) gateway", load)


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
        "--loadgen", action="store_true", help="use bench.loadgen even if wrk exists"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also record a py-spy speedscope profile of the gateway at 32 connections here",
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
    print(
        f"bench: {args.duration:g} s per point after {args.warmup:g} s warm-up; "
        f"load generator: {'wrk' if use_wrk else 'bench.loadgen (asyncio/aiohttp)'}",
        flush=True,
    )
    points: list[Point] = []
    usage: dict[str, Any] = {}
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
        )
        try:
            points += run_mock_points(bench)
            _, mock_port = start_mock(bench, LOAD)
            points.append(run_sdk_ceiling(bench, mock_port))
            gateway_points, usage = run_gateway_points(bench, mock_port)
            points += gateway_points
            if args.limits_redis_url:
                points += run_limits_points(bench, mock_port, args.limits_redis_url)
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
    result = summary(points, usage)
    print_summary(result)
    limits_cost = print_limits_cost(points)
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
                "pinned": pin,
                "environment": environment(),
                "points": [p.as_dict() for p in points],
                "summary": result,
                "limits_cost": limits_cost,
                "profile": profile,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {out}")
    if not result["correctness"]["pass"]:
        return 1
    if args.strict and not all(v.get("pass", True) for v in result.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
