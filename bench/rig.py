"""What every point of `make bench` shares: the run's options (`Bench`), measuring one point,
starting the mock LLM, a private Redis and a seeded gateway.

The process under test runs on core 0 (`UNDER_TEST`); the load generator (wrk, else
bench.loadgen in the bench process) and the mock LLM on core 1 (`LOAD`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import wrk
from bench.loadgen import ExpectArg, LoadResult, run_load, run_sync
from bench.payloads import AGENT_NAME, AGENT_SPEC
from bench.procs import LOOPBACK, PROXY_VARS, Child, CpuWindow, free_port
from bench.report import Point

UNDER_TEST, LOAD = 0, 1  # cores
COMPLETED = b'"status":"completed"'

# Limits on, high enough never to refuse: every request and model call pays the checks.
BENCH_LIMITS = {
    "requests_per_minute": 10**9,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
    "max_concurrent_runs": 10**6,
}


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
    gateway_env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every gateway process (e.g. GATEWAY_UPSTREAM_CLIENT)."""
    children: list[Child] = field(default_factory=list)
    private_redis: str | None = None

    def core(self, core: int) -> int | None:
        return core if self.pin else None

    @property
    def compare_connections(self) -> list[int]:
        """Connection counts of the mock and of the LiteLLM comparison: those <= 32."""
        return [c for c in self.connections if c <= 32] or self.connections[:1]

    def drive(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        connections: int,
        seconds: float,
        expect: ExpectArg,
        *,
        ttfb: bool = False,
    ) -> LoadResult:
        """One closed-loop load: wrk when available, bench.loadgen otherwise or for `ttfb`."""
        return drive(
            url,
            body,
            headers,
            connections=connections,
            seconds=seconds,
            expect=expect,
            use_wrk=self.use_wrk and not ttfb,
            cpus=str(LOAD) if self.pin else None,
            ttfb=ttfb,
        )

    def point(
        self,
        name: str,
        pid: int,
        url: str,
        body: bytes,
        headers: dict[str, str],
        connections: int,
        expect: ExpectArg = None,
        *,
        tree: bool = False,
        ttfb: bool = False,
    ) -> Point:
        """Warm up, then measure one point with the CPU time of `pid` (with `tree`: of its
        process tree) around it. With `ttfb`, the time to the first body chunk is measured by
        bench.loadgen: in the same window when it is the load generator, else in a second
        window of the same length after wrk's (not part of the throughput or CPU figures)."""
        warm = self.drive(url, body, headers, connections, self.warmup, expect)
        window = CpuWindow(pid, self.core(UNDER_TEST), tree=tree)
        load = self.drive(
            url, body, headers, connections, self.duration, expect, ttfb=ttfb and not self.use_wrk
        )
        point = Point(name, load, window.close(), warmup_ok=warm.ok)
        if ttfb and load.ttfb_p50_ms is None:
            point.ttfb_load = self.drive(
                url, body, headers, connections, self.duration, expect, ttfb=True
            )
        extra = f", TTFB p50 {point.ttfb_p50_ms:.2f} ms" if point.ttfb_p50_ms is not None else ""
        print(
            f"  {name} c={connections}: {load.rps:.0f} req/s, errors {point.errors}{extra}",
            flush=True,
        )
        return point

    def start(self, name: str, command: list[str], env: dict[str, str], core: int) -> Child:
        child = Child(
            name, command, env=env, log_path=self.tmp / f"{name}.log", cpu=self.core(core)
        )
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        """Stop a child now (its core is needed by the next point)."""
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {child.name}: {exc}", file=sys.stderr)
        self.children.clear()


def drive(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
    expect: ExpectArg,
    use_wrk: bool,
    cpus: str | None,
    ttfb: bool = False,
) -> LoadResult:
    """One closed-loop load run: wrk under `taskset -c cpus` (None: unpinned), else
    bench.loadgen in this process (wherever this process runs; it alone measures `ttfb`)."""
    if use_wrk and not ttfb:
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
        run_load(
            url,
            body,
            headers,
            connections=connections,
            duration_s=seconds,
            expect=expect,
            ttfb=ttfb,
        )
    )


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


def start_redis(bench: Bench) -> str:
    """The run's private `redis-server` on the load core (as the mock LLM): in production Redis
    runs on its own host, never on the gateway's core. Started once per run, shared by (c')
    and (d). Falls back to the local Redis on 6379."""
    if bench.private_redis is not None:
        return bench.private_redis
    binary = shutil.which("redis-server")
    if binary is None:
        print("  redis-server not found: using redis://127.0.0.1:6379/0", flush=True)
        bench.private_redis = "redis://127.0.0.1:6379/0"
        return bench.private_redis
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
    bench.private_redis = f"redis://127.0.0.1:{port}/0"
    return bench.private_redis


@dataclass
class Gateway:
    """A started, seeded gateway: its process, base URL, tenant key and agent."""

    child: Child
    base: str
    key: str
    agent: str = AGENT_NAME

    @property
    def run_url(self) -> str:
        return f"{self.base}/v1/agents/{self.agent}/runs"

    @property
    def chat_url(self) -> str:
        return f"{self.base}/v1/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def recorded_runs(self) -> int:
        """Runs of our agent in the tenant's usage report."""
        report = http_json("GET", f"{self.base}/v1/usage?group_by=agent", self.key)
        return sum(row["runs"] for row in report["data"] if row.get("agent") == self.agent)


def gateway_binary() -> str:
    binary = str(Path(sys.executable).with_name("gateway"))
    return binary if Path(binary).exists() else shutil.which("gateway") or "gateway"


def start_gateway(
    bench: Bench,
    mock_port: int,
    *,
    limits: dict[str, int] | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
    upstream_api: str = "responses",
    agent: tuple[str, dict[str, Any]] = (AGENT_NAME, AGENT_SPEC),
) -> Gateway:
    """Migrate a fresh database (SQLite in the run's directory unless `database_url`), serve
    the gateway on core 0, seed it via the admin API (tenant `bench`, one key, `agent`)."""
    admin_token = "bench-" + secrets.token_urlsafe(24)
    sqlite = f"sqlite+aiosqlite:///{bench.tmp}/bench-{secrets.token_hex(3)}.db"
    env = base_env() | {
        "GATEWAY_ENV": "development",
        "GATEWAY_DATABASE_URL": database_url or sqlite,
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_UPSTREAM_API": upstream_api,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "bench",
    }
    if redis_url or bench.redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url or bench.redis_url or ""
        env["GATEWAY_REDIS_KEY_PREFIX"] = f"bench:{secrets.token_hex(4)}:"
    env |= bench.gateway_env
    binary = gateway_binary()
    subprocess.run([binary, "db", "upgrade"], env=env, check=True, timeout=120, capture_output=True)
    port = free_port()
    command = [binary, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
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
    name, spec = agent
    http_json("PUT", f"{tenant_url}/agents/{name}", admin_token, spec)
    return Gateway(child, base, key, name)
