"""Mixed soak of one gateway worker: is its memory flat under steady mixed traffic?

    .venv/bin/python -m bench.soak [--minutes 10] [--warmup-minutes 2] [--rate 10] [--clients 4]

`gateway serve --workers 1` on core 0 with usage records in a fresh PostgreSQL database
(created, migrated, dropped at the end) and every limit on (bench.run's BENCH_LIMITS, never
refusing) in a private `redis-server`; the mock LLM and Redis on core 1, and this process (the
clients) too. `--clients` aiohttp clients share one schedule of `--rate` operations per second
(a client that is late starts its next operation at once, so the rate is an upper bound), taking
the operations in turn from this cycle:

- `run`: POST /v1/agents/assistant/runs, no tool (one model call);
- `run_tool`: the same with the calculator (two model calls; the output must hold 84);
- `sse`: a streamed run (`"stream": true`), read to its `run.completed` event;
- `ws`: GET /v1/agents/assistant/ws, two turns (each read to `run.completed`), close;
- `chat` / `chat_stream`: POST /v1/chat/completions (`model` = the agent), plain, and streamed
  to `data: [DONE]`;
- `conversation`: POST /v1/conversations, two runs with its `conversation_id`, DELETE it.

Every answer's status and body are checked; errors are counted by operation and kind. Every
`--sample-s` seconds the VmRSS of the process that serves (with `--workers 1`, the started
process itself: `gateway serve` re-executes itself under jemalloc with `execve`, same pid,
and forks nothing; checked and recorded) is read from /proc/<pid>/status. After the warm-up:
first, last, min, max and median RSS, the least-squares slope in MiB per 10 minutes (also of
each half), and the verdict "flat": max and min within 5 % of the median. At the end, usage
recorded in PostgreSQL must count every successful run. JSON in
bench/results/soak-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import fleet
from bench.loadgen import run_sync
from bench.payloads import AGENT_NAME, AGENT_SPEC, PROMPT
from bench.procs import can_pin, cpu_seconds
from bench.rig import BENCH_LIMITS, LOAD, UNDER_TEST, Bench, http_json, start_mock, start_redis

CYCLE = ("run", "run_tool", "sse", "ws", "chat", "chat_stream", "conversation")
RUNS_PER_OP = {"conversation": 2, "ws": 2}
TOOL_PROMPT = "What is 12*7? Use the calculator."
OP_TIMEOUT_S = 60.0
FLAT_PCT = 5.0


class Failed(Exception):
    """An answer that is not what the operation expects (the kind is the message)."""


@dataclass
class Traffic:
    """The clients' shared schedule and counters."""

    base: str
    key: str
    rate: float
    deadline: float
    started: float = field(default_factory=time.monotonic)
    issued: int = 0
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    runs_ok: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def next_slot(self) -> tuple[str, float]:
        """The next operation of the cycle and when it may start."""
        op = CYCLE[self.issued % len(CYCLE)]
        at = self.started + self.issued / self.rate
        self.issued += 1
        return op, at


async def expect_status(resp: aiohttp.ClientResponse, status: int) -> bytes:
    body = await resp.read()
    if resp.status != status:
        raise Failed(f"status {resp.status}")
    return body


def completed_run(body: bytes) -> dict[str, Any]:
    run: dict[str, Any] = json.loads(body)
    if run.get("status") != "completed":
        raise Failed(f"run {run.get('status')}")
    return run


async def op_run(session: aiohttp.ClientSession, t: Traffic, prompt: str) -> dict[str, Any]:
    url = f"{t.base}/v1/agents/{AGENT_NAME}/runs"
    async with session.post(url, json={"input": prompt}, headers=t.headers) as resp:
        return completed_run(await expect_status(resp, 200))


async def op_run_tool(session: aiohttp.ClientSession, t: Traffic) -> None:
    run = await op_run(session, t, TOOL_PROMPT)
    if "84" not in str(run.get("output")) or (run.get("usage") or {}).get("requests") != 2:
        raise Failed("tool run output")


async def op_sse(session: aiohttp.ClientSession, t: Traffic) -> None:
    url = f"{t.base}/v1/agents/{AGENT_NAME}/runs"
    body = {"input": PROMPT, "stream": True}
    async with session.post(url, json=body, headers=t.headers) as resp:
        data = await expect_status(resp, 200)
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            raise Failed("sse content-type")
    if b"event: run.completed" not in data or b"event: run.failed" in data:
        raise Failed("sse events")


async def op_ws(session: aiohttp.ClientSession, t: Traffic) -> None:
    url = f"{t.base}/v1/agents/{AGENT_NAME}/ws".replace("http://", "ws://")
    async with session.ws_connect(url, headers=t.headers, heartbeat=None) as ws:
        for prompt in (PROMPT, "And again, briefly"):
            await ws.send_str(json.dumps({"input": prompt}))
            while True:
                message = await ws.receive(timeout=OP_TIMEOUT_S)
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise Failed(f"ws {message.type.name.lower()}")
                event = json.loads(message.data).get("event")
                if event == "run.completed":
                    break
                if event in ("run.failed", "error", "run.requires_action"):
                    raise Failed(f"ws {event}")


async def op_chat(session: aiohttp.ClientSession, t: Traffic, stream: bool) -> None:
    body: dict[str, Any] = {"model": AGENT_NAME, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    url = f"{t.base}/v1/chat/completions"
    async with session.post(url, json=body, headers=t.headers) as resp:
        data = await expect_status(resp, 200)
    if stream:
        if not data.rstrip().endswith(b"data: [DONE]"):
            raise Failed("chat stream end")
        return
    choices = json.loads(data).get("choices") or [{}]
    if not (choices[0].get("message") or {}).get("content"):
        raise Failed("chat content")


async def op_conversation(session: aiohttp.ClientSession, t: Traffic) -> None:
    async with session.post(f"{t.base}/v1/conversations", json={}, headers=t.headers) as resp:
        conversation = json.loads(await expect_status(resp, 201))["id"]
    url = f"{t.base}/v1/agents/{AGENT_NAME}/runs"
    for prompt in (PROMPT, "What did I just say?"):
        body = {"input": prompt, "conversation_id": conversation}
        async with session.post(url, json=body, headers=t.headers) as resp:
            run = completed_run(await expect_status(resp, 200))
        if run.get("conversation_id") != conversation:
            raise Failed("conversation id")
    async with session.delete(
        f"{t.base}/v1/conversations/{conversation}", headers=t.headers
    ) as resp:
        await expect_status(resp, 204)


async def one(session: aiohttp.ClientSession, t: Traffic, op: str) -> None:
    if op == "run":
        await op_run(session, t, PROMPT)
    elif op == "run_tool":
        await op_run_tool(session, t)
    elif op == "sse":
        await op_sse(session, t)
    elif op == "ws":
        await op_ws(session, t)
    elif op in ("chat", "chat_stream"):
        await op_chat(session, t, stream=op == "chat_stream")
    elif op == "conversation":
        await op_conversation(session, t)
    else:
        raise ValueError(op)


async def client(session: aiohttp.ClientSession, t: Traffic) -> None:
    while True:
        op, at = t.next_slot()
        if at >= t.deadline:
            return
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            await asyncio.wait_for(one(session, t, op), OP_TIMEOUT_S)
        except Failed as exc:
            t.errors[f"{op}: {exc}"] += 1
        except TimeoutError:
            t.errors[f"{op}: timeout"] += 1
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            t.errors[f"{op}: {type(exc).__name__}"] += 1
        else:
            t.ok[op] += 1
            t.runs_ok += RUNS_PER_OP.get(op, 1)
            t.latency_ms.setdefault(op, []).append((time.perf_counter() - started) * 1000)


async def sampler(
    pid: int, t: Traffic, every_s: float, warmup_s: float, samples: list[dict[str, Any]]
) -> None:
    """RSS (and CPU) of the serving process every `every_s`, with a progress line a minute."""
    last_print = 0.0
    while True:
        elapsed = time.monotonic() - t.started
        rss = fleet.rss_kib(pid)
        samples.append(
            {
                "t_s": round(elapsed, 2),
                "rss_kib": rss,
                "cpu_s": cpu_seconds(pid),
                "ops_ok": sum(t.ok.values()),
                "errors": sum(t.errors.values()),
                "phase": "warmup" if elapsed < warmup_s else "measure",
            }
        )
        if elapsed - last_print >= 60 or not last_print:
            last_print = elapsed or 1e-9
            print(
                f"  {elapsed / 60:5.1f} min  RSS {rss / 1024:7.1f} MiB  ops ok "
                f"{sum(t.ok.values()):6d}  errors {sum(t.errors.values())}",
                flush=True,
            )
        if time.monotonic() >= t.deadline:
            return
        await asyncio.sleep(every_s)


async def soak(
    base: str, key: str, pid: int, args: argparse.Namespace, samples: list[dict[str, Any]]
) -> Traffic:
    total_s = (args.warmup_minutes + args.minutes) * 60
    t = Traffic(base, key, args.rate, deadline=time.monotonic() + total_s)
    timeout = aiohttp.ClientTimeout(total=OP_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sampling = asyncio.create_task(
            sampler(pid, t, args.sample_s, args.warmup_minutes * 60, samples)
        )
        clients = [asyncio.create_task(client(session, t)) for _ in range(args.clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*clients), total_s + OP_TIMEOUT_S + 30)
            await asyncio.wait_for(sampling, args.sample_s + 30)
        finally:
            for task in [*clients, sampling]:
                task.cancel()
    samples.append(
        {
            "t_s": round(time.monotonic() - t.started, 2),
            "rss_kib": fleet.rss_kib(pid),
            "cpu_s": cpu_seconds(pid),
            "ops_ok": sum(t.ok.values()),
            "errors": sum(t.errors.values()),
            "phase": "measure",
        }
    )
    return t


def analyse(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS after the warm-up: first/last/min/max/median MiB, slope per 10 min, flat verdict."""
    measured = [s for s in samples if s["phase"] == "measure"]
    if len(measured) < 3:
        return {"samples": len(measured), "flat": None, "note": "too few samples after warm-up"}
    mib = [s["rss_kib"] / 1024 for s in measured]
    minutes = [s["t_s"] / 60 for s in measured]
    _, slope = fleet.linear_fit(minutes, mib)
    half = len(mib) // 2
    halves = [
        fleet.linear_fit(minutes[:half], mib[:half])[1] * 10 if half >= 2 else None,
        fleet.linear_fit(minutes[half:], mib[half:])[1] * 10 if len(mib) - half >= 2 else None,
    ]
    median = statistics.median(mib)
    low, high = min(mib), max(mib)
    return {
        "samples": len(measured),
        "first_mib": mib[0],
        "last_mib": mib[-1],
        "min_mib": low,
        "max_mib": high,
        "median_mib": median,
        "slope_mib_per_10min": slope * 10,
        "slope_halves_mib_per_10min": halves,
        "max_over_median_pct": (high / median - 1) * 100,
        "min_under_median_pct": (1 - low / median) * 100,
        "flat_band_pct": FLAT_PCT,
        "flat": high <= median * (1 + FLAT_PCT / 100) and low >= median * (1 - FLAT_PCT / 100),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes")
    parser.add_argument("--warmup-minutes", type=float, default=2.0, help="minutes not judged")
    parser.add_argument("--rate", type=float, default=10.0, help="operations per second (max)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent aiohttp clients")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS reads")
    parser.add_argument("--pg", default=fleet.PG_ADMIN_DSN, help="PostgreSQL admin DSN")
    return parser.parse_args(argv)


def process_report(gateway: fleet.GatewayProc) -> dict[str, Any]:
    """Which process serves, whether `gateway serve --workers 1` forked, its allocator."""
    pid = gateway.child.pid
    tree = []
    for member in fleet.descendants(pid):
        try:
            cmdline = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        tree.append({"pid": member, "cmdline": cmdline.decode(errors="replace")[:200]})
    serving = gateway.serving_pids()[0]
    return {
        "started_pid": pid,
        "serving_pid": serving,
        "descendants": tree,
        "forks": bool(tree),
        "ld_preload": fleet.preload_of(serving),
        "exe": os.readlink(f"/proc/{serving}/exe"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOAD})
    else:
        print("warning: cores 0 and 1 are not both available; running unpinned", file=sys.stderr)
    started = datetime.now(UTC)
    print(
        f"soak: {args.warmup_minutes:g} min warm-up + {args.minutes:g} min, at most "
        f"{args.rate:g} ops/s from {args.clients} clients, cycle {', '.join(CYCLE)}; "
        "one worker on core 0, PostgreSQL usage, Redis limits",
        flush=True,
    )
    samples: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        bench = Bench(
            duration=args.minutes * 60,
            warmup=args.warmup_minutes * 60,
            connections=[args.clients],
            sdk_concurrency=1,
            redis_url=None,
            pin=pin,
            tmp=Path(tmp),
            use_wrk=False,
        )
        with fleet.PgDatabase(args.pg) as database:
            try:
                _, mock_port = start_mock(bench, LOAD)
                redis_url = start_redis(bench)
                token = fleet.admin_token()
                env = fleet.gateway_env(bench, mock_port, database.url, token, redis_url)
                fleet.migrate(env)
                gateway = fleet.launch_gateway(
                    bench, env, workers=1, cpus=str(UNDER_TEST) if pin else None
                )
                key = fleet.seed(gateway.base, token, {AGENT_NAME: AGENT_SPEC}, BENCH_LIMITS)
                processes = process_report(gateway)
                print(
                    f"  serving pid {processes['serving_pid']} (started {processes['started_pid']}"
                    f", forks: {processes['forks']}, LD_PRELOAD={processes['ld_preload'] or '-'})",
                    flush=True,
                )
                cpu_before = cpu_seconds(processes["serving_pid"])
                traffic = run_sync(soak(gateway.base, key, processes["serving_pid"], args, samples))
                cpu_used = cpu_seconds(processes["serving_pid"]) - cpu_before
                usage = check_usage(gateway.base, key, traffic.runs_ok)
            except BaseException:
                for child in bench.children:
                    print(f"--- {child.name} log tail ---\n{child.tail()}", file=sys.stderr)
                raise
            finally:
                bench.stop_all()

    result = analyse(samples)
    wall = samples[-1]["t_s"] if samples else 0.0
    print_report(traffic, result, usage, cpu_used, wall)
    out = fleet.write_result(
        "soak",
        started,
        {
            "options": vars(args),
            "pinned": pin,
            "process": processes,
            "operations_ok": dict(traffic.ok),
            "errors": dict(traffic.errors),
            "latency_ms_p50": {
                op: statistics.median(v) for op, v in sorted(traffic.latency_ms.items())
            },
            "gateway_cpu_s": cpu_used,
            "rss": result,
            "usage": usage,
            "samples": samples,
        },
    )
    print(f"\nresults: {out}")
    return 0 if result.get("flat") and not traffic.errors and usage.get("ok") else 1


def check_usage(base: str, key: str, runs_ok: int) -> dict[str, Any]:
    """Usage recorded in PostgreSQL counts every successful run (flushed every 0.5 s)."""
    deadline = time.monotonic() + 15
    recorded = 0
    while time.monotonic() < deadline:
        report = http_json("GET", f"{base}/v1/usage?group_by=agent", key)
        recorded = sum(row["runs"] for row in report["data"] if row.get("agent") == AGENT_NAME)
        if recorded >= runs_ok:
            break
        time.sleep(0.5)
    return {"recorded_runs": recorded, "successful_runs": runs_ok, "ok": recorded >= runs_ok}


def print_report(
    t: Traffic, r: dict[str, Any], usage: dict[str, Any], cpu_s: float, wall_s: float
) -> None:
    ops = sum(t.ok.values())
    print(f"\noperations ok: {ops} in {wall_s / 60:.1f} min ({ops / max(wall_s, 1):.1f}/s)")
    for op in CYCLE:
        lat = t.latency_ms.get(op) or [0.0]
        print(f"  {op:<13} {t.ok[op]:6d} ok, p50 {statistics.median(lat):7.1f} ms")
    print(f"errors: {sum(t.errors.values())}")
    for kind, count in sorted(t.errors.items()):
        print(f"  {kind}: {count}")
    print(f"gateway CPU: {cpu_s:.1f} s ({cpu_s / max(wall_s, 1) * 100:.1f} % of a core)")
    if r.get("flat") is None:
        print(f"RSS: {r.get('note')}")
        return
    print(
        f"RSS after warm-up ({r['samples']} samples): first {r['first_mib']:.1f}, last "
        f"{r['last_mib']:.1f}, min {r['min_mib']:.1f}, max {r['max_mib']:.1f}, median "
        f"{r['median_mib']:.1f} MiB; slope {r['slope_mib_per_10min']:+.2f} MiB per 10 min"
    )
    first, second = r["slope_halves_mib_per_10min"]
    if first is not None and second is not None:
        print(
            f"slope of the first / second half: {first:+.2f} / {second:+.2f} MiB per 10 min "
            "(a falling slope: still settling; a steady one: growth)"
        )
    verdict = "PASS" if r["flat"] else "FAIL"
    print(
        f"flat within +/-{r['flat_band_pct']:g} % of the median: "
        f"max +{r['max_over_median_pct']:.2f} %, min -{r['min_under_median_pct']:.2f} %  {verdict}"
    )
    print(
        f"usage recorded in PostgreSQL: {usage.get('recorded_runs')} runs >= "
        f"{usage.get('successful_runs')} successful runs: {'PASS' if usage.get('ok') else 'FAIL'}"
    )


if __name__ == "__main__":
    sys.exit(main())
