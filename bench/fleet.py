"""Shared pieces of bench.kcalls, bench.workers and bench.soak: a gateway of any worker count
on SQLite or a fresh PostgreSQL database, seeded through the admin API; the CPU time of groups
of processes; RSS; moving processes between cores; the results file.

It reuses bench.rig / bench.procs (Bench, Child, base_env, http_json, start_redis) and only
adds what those do not offer (several workers, PostgreSQL, an admin token kept for seeding
several agents, process-tree accounting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.loadgen import ExpectArg
from bench.procs import Child, CpuWindow, core_busy_seconds, cpu_seconds, free_port
from bench.rig import Bench, base_env, drive, http_json

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS_DIR = Path(__file__).parent / "results"  # as bench.run's, gitignored


def gateway_bin() -> str:
    path = Path(sys.executable).with_name("gateway")
    return str(path) if path.exists() else shutil.which("gateway") or "gateway"


def admin_token() -> str:
    return "bench-" + secrets.token_urlsafe(24)


# --- PostgreSQL: a database of the run's own -------------------------------------------------


async def _pg_execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(sql, timeout=60)
    finally:
        await connection.close()


@dataclass
class PgDatabase:
    """A fresh database on the local PostgreSQL: created on entry, dropped on exit."""

    admin_dsn: str = PG_ADMIN_DSN
    name: str = field(default_factory=lambda: f"gw_bench_{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        """The gateway's SQLAlchemy URL of the database."""
        base = self.admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{self.name}"

    def __enter__(self) -> PgDatabase:
        asyncio.run(_pg_execute(self.admin_dsn, f'CREATE DATABASE "{self.name}"'))
        return self

    def __exit__(self, *exc: object) -> None:
        sql = f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
        asyncio.run(_pg_execute(self.admin_dsn, sql))


# --- The gateway -----------------------------------------------------------------------------


@dataclass
class GatewayProc:
    """A started gateway: its process (the uvicorn server, or the supervisor of the workers),
    base URL and admin token."""

    child: Child
    base: str
    admin_token: str
    workers: int

    def pids(self) -> list[int]:
        """The process itself and all its live descendants (supervisor, workers, helpers)."""
        return [self.child.pid, *descendants(self.child.pid)]

    def serving_pids(self) -> list[int]:
        """The processes that accept connections: the spawned workers when there are several,
        else the started process itself (`--workers 1` serves in it: the allocator's re-exec
        is an `execve`, same pid)."""
        workers = [p for p in descendants(self.child.pid) if is_spawned_worker(p)]
        return workers if self.workers > 1 and workers else [self.child.pid]


def gateway_env(
    bench: Bench,
    mock_port: int,
    database_url: str,
    token: str,
    redis_url: str | None = None,
) -> dict[str, str]:
    """The gateway's environment, as bench.run's start_gateway builds it, plus a private
    metrics dir and usage spill path in the run's temporary directory."""
    env = base_env() | {
        "GATEWAY_ENV": "development",
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_ADMIN_TOKEN": token,
        "GATEWAY_UPSTREAM_API": "responses",
        "GATEWAY_METRICS_DIR": str(bench.tmp / f"metrics-{secrets.token_hex(3)}"),
        "GATEWAY_USAGE_SPILL_PATH": str(bench.tmp / "usage-spill.ndjson"),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "bench",
    }
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
        env["GATEWAY_REDIS_KEY_PREFIX"] = f"bench:{secrets.token_hex(4)}:"
    return env


def sqlite_url(bench: Bench) -> str:
    return f"sqlite+aiosqlite:///{bench.tmp}/bench-{secrets.token_hex(3)}.db"


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [gateway_bin(), "db", "upgrade"], env=env, check=True, timeout=120, capture_output=True
    )


def launch_gateway(
    bench: Bench,
    env: dict[str, str],
    *,
    workers: int = 1,
    cpus: str | None = "0",
    name: str = "gateway",
    timeout_s: float = 60.0,
) -> GatewayProc:
    """`gateway serve --workers N` on a free port under `taskset -c cpus` (None: unpinned),
    registered with `bench` (stopped by `bench.stop_all()`); waits for /healthz and, with
    several workers, for all of them."""
    port = free_port()
    command = [gateway_bin(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    log = bench.tmp / f"{name}-{secrets.token_hex(2)}.log"
    child = Child(name, command, env=env, log_path=log, cpu=None)
    bench.children.append(child)
    base = f"http://127.0.0.1:{port}"
    child.wait_http(f"{base}/healthz", timeout_s=timeout_s)
    gateway = GatewayProc(child, base, env["GATEWAY_ADMIN_TOKEN"], workers)
    if workers > 1:  # /healthz answers as soon as the first worker does
        deadline = time.monotonic() + timeout_s
        while len(gateway.serving_pids()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers not up after {timeout_s}s:\n{child.tail()}")
            time.sleep(0.1)
        time.sleep(2.0)  # the other workers' app start-up (lifespan) after their spawn
    return gateway


def seed(
    base: str, token: str, agents: dict[str, dict[str, Any]], limits: dict[str, int] | None
) -> str:
    """Tenant `bench` with `limits`, one API key (all scopes), the `agents`; returns the key."""
    tenant = http_json(
        "POST",
        f"{base}/admin/tenants",
        token,
        {"slug": "bench", "name": "bench", "limits": limits or {}},
    )
    tenant_url = f"{base}/admin/tenants/{tenant['id']}"
    key: str = http_json("POST", f"{tenant_url}/keys", token, {"name": "bench"})["key"]
    for name, spec in agents.items():
        http_json("PUT", f"{tenant_url}/agents/{name}", token, spec)
    return key


def stop_child(bench: Bench, child: Child) -> None:
    """Stop one child now (SIGINT, then SIGKILL of its group) and forget it."""
    try:
        child.stop()
    finally:
        if child in bench.children:
            bench.children.remove(child)


# --- Load ------------------------------------------------------------------------------------


def measured_point(
    pid: int,
    core: int | None,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    warmup: float,
    duration: float,
    expect: ExpectArg,
    use_wrk: bool,
    cpus: str | None,
) -> dict[str, Any]:
    """Warm up (discarded), then `duration` s of load with the CPU time of `pid` (CpuWindow:
    `cpu_s`, `core_other_pct` of `core`) around it; the load's numbers and the CPU per
    request."""
    kwargs: dict[str, Any] = {"expect": expect, "use_wrk": use_wrk, "cpus": cpus}
    warm = drive(url, body, headers, connections=connections, seconds=warmup, **kwargs)
    window = CpuWindow(pid, core)
    load = drive(url, body, headers, connections=connections, seconds=duration, **kwargs)
    cpu = window.close()
    cpu_s = cpu["cpu_s"]
    per_request = cpu_s * 1000 / load.requests if cpu_s is not None and load.requests else None
    return {**load.as_dict(), **cpu, "cpu_ms_per_request": per_request, "warmup_ok": warm.ok}


# --- Processes: trees, CPU, RSS, cores -------------------------------------------------------


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (from the parent pids in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children.setdefault(_ppid(int(entry.name)), []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_spawned_worker(pid: int) -> bool:
    """A multiprocessing `spawn` child (a worker), not its resource tracker."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for_quiet(
    cores: list[int], ours: list[int], threshold_pct: float, max_wait_s: float
) -> dict[str, float]:
    """Wait (at most `max_wait_s`) until `cores` spend less than `threshold_pct` % of their
    time on anything but the processes `ours` (1 s samples): on a shared machine, start a
    point when the others' work has paused. Returns the last sample and the time waited."""
    started = time.monotonic()
    busy_pct = 0.0
    while True:
        before = sum(core_busy_seconds(c) for c in cores)
        own = sum(safe_cpu_seconds(p) for p in ours)
        time.sleep(1.0)
        busy = sum(core_busy_seconds(c) for c in cores) - before
        busy -= sum(safe_cpu_seconds(p) for p in ours) - own
        busy_pct = max(0.0, busy) / len(cores) * 100
        waited = time.monotonic() - started
        if busy_pct < threshold_pct or waited >= max_wait_s:
            return {"others_busy_pct": busy_pct, "waited_s": waited}


def safe_cpu_seconds(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def preload_of(pid: int) -> str:
    """LD_PRELOAD of a process's environment ('' when unset or unreadable)."""
    try:
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"LD_PRELOAD="):
                return item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
    return ""


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Move every thread of a process to `cpus` (sched_setaffinity is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that just exited
            os.sched_setaffinity(int(task.name), cpus)


def children_cpu_seconds() -> float:
    """User + system CPU of this process's waited-for children (e.g. a finished wrk run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class GroupCpu:
    """CPU seconds of named groups of processes, of our reaped children (a wrk run inside the
    window) and of the machine's cores over a window. A process that exits inside the window
    loses its last share (not the case for the long-lived processes measured here)."""

    def __init__(self, groups: dict[str, list[int]], cores: list[int]) -> None:
        self.groups, self.cores = groups, cores
        self._start = self._read()
        self._wall = time.monotonic()

    def _read(self) -> dict[str, float]:
        values = {
            name: sum(safe_cpu_seconds(p) for p in pids) for name, pids in self.groups.items()
        }
        values["_children"] = children_cpu_seconds()
        for core in self.cores:
            values[f"_core{core}"] = core_busy_seconds(core)
        return values

    def close(self) -> dict[str, float]:
        """CPU seconds per group, `reaped_children_s`, `core<n>_busy_s` per core and their
        sum `cores_busy_s`, `wall_s`."""
        end = self._read()
        out = {name: end[name] - self._start[name] for name in self.groups}
        out["reaped_children_s"] = end["_children"] - self._start["_children"]
        for core in self.cores:
            out[f"core{core}_busy_s"] = end[f"_core{core}"] - self._start[f"_core{core}"]
        out["cores_busy_s"] = sum(out[f"core{core}_busy_s"] for core in self.cores)
        out["wall_s"] = time.monotonic() - self._wall
        return out


# --- Results ---------------------------------------------------------------------------------


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def write_result(prefix: str, started: datetime, payload: dict[str, Any]) -> Path:
    """bench/results/<prefix>-<UTC timestamp>.json (gitignored)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{prefix}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    body = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "argv": sys.argv,
        "commit": git_commit(),
        "loadavg": os.getloadavg(),
        **payload,
    }
    out.write_text(json.dumps(body, indent=2, default=str))
    return out


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b x."""
    n = len(xs)
    if n < 2:
        raise ValueError("a fit needs two points")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def quadratic_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares (a, b, q) of y = a + b x + q x^2 (needs three distinct xs)."""
    if len(set(xs)) < 3:
        raise ValueError("a quadratic fit needs three distinct points")
    # Normal equations M (a, b, q) = v, solved by Cramer's rule (3 x 3).
    s = [sum(x**i for x in xs) for i in range(5)]
    v = [sum(y * x**i for x, y in zip(xs, ys, strict=True)) for i in range(3)]
    m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]]

    def det(a: list[list[float]]) -> float:
        return (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )

    d = det(m)
    coefficients = []
    for col in range(3):
        mc = [[v[r] if c == col else m[r][c] for c in range(3)] for r in range(3)]
        coefficients.append(det(mc) / d)
    return coefficients[0], coefficients[1], coefficients[2]
