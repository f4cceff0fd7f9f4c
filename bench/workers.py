"""`gateway serve --workers 2` against `--workers 1` on the same two cores: does a second worker
(nearly) double the throughput?

    .venv/bin/python -m bench.workers [--duration 10] [--warmup 3] [--connections 32] [--rounds 2]

Production-like state: usage records in a fresh PostgreSQL database (created, migrated, dropped
at the end), every limit on (bench.run's BENCH_LIMITS, never refusing) in a private
`redis-server`. One plain agent (instructions only, one model call per run), driven with
`POST /v1/agents/plain/runs` by wrk (else bench.loadgen) in a closed loop.

The machine has two cores, and the mock LLM, Redis, PostgreSQL and the load generator need CPU
too, so the layouts are:

- 1 worker: the gateway pinned to core 0; mock, Redis and wrk on core 1 (PostgreSQL, a system
  service, unpinned);
- 2 workers: the gateway (supervisor and both workers) on cores 0-1; mock, Redis and wrk
  unpinned on cores 0-1 as well: they take their share of both cores from the workers.

So beside raw req/s every point records the CPU seconds of each party over the window (the
gateway's whole process tree, each worker, the mock, Redis, the PostgreSQL backends of the
run's database, wrk, and everything else on the two cores), and the summary gives both the raw
ratio req/s(2) / req/s(1) and the ratio of requests per gateway-core-second, the scaling with
the cores the gateway actually got. Each round starts one variant later (1, 2, then 2, 1...);
the summary uses medians. `--variants 1,2,1-shared,1-mp` adds two diagnostics of the CPU per
request: one worker in the layout of two (everything on cores 0-1), and one worker with
prometheus_client's multiprocess mode (which `--workers 2` turns on). JSON in
bench/results/workers-<UTC timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fleet, wrk
from bench.payloads import INSTRUCTIONS, MODEL, PROMPT
from bench.procs import can_pin
from bench.report import fmt
from bench.rig import BENCH_LIMITS, LOAD, Bench, http_json, start_mock, start_redis

AGENT = "plain"
AGENT_SPEC: dict[str, Any] = {"instructions": INSTRUCTIONS, "model": MODEL}
COMPLETED = b'"status":"completed"'
TARGET_RATIO = 1.8
BOTH = {0, 1}


def postgres_backends(database: str) -> list[int]:
    """PostgreSQL backend processes connected to `database` (from their process titles)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            found.append(int(entry.name))
    return found


VARIANTS: dict[str, dict[str, Any]] = {
    "1": {
        "workers": 1,
        "gateway": "0",
        "load": {LOAD},
        "wrk": str(LOAD),
        "note": "1 worker on core 0; mock, Redis, wrk on core 1; PostgreSQL unpinned",
    },
    "2": {
        "workers": 2,
        "gateway": "0,1",
        "load": BOTH,
        "wrk": "0,1",
        "note": "2 workers, mock, Redis, wrk all on cores 0-1; PostgreSQL unpinned",
    },
    # Diagnostics: where does a request of 2 workers cost more CPU than one of 1 worker?
    "1-shared": {
        "workers": 1,
        "gateway": "0,1",
        "load": BOTH,
        "wrk": "0,1",
        "note": "1 worker in the layout of 2 (everything on cores 0-1)",
    },
    "1-mp": {
        "workers": 1,
        "gateway": "0",
        "load": {LOAD},
        "wrk": str(LOAD),
        "multiprocess_metrics": True,
        "note": "as 1, with prometheus_client's multiprocess mode (metrics in files, as with 2)",
    },
}


def layout(variant: str, pin: bool) -> dict[str, Any]:
    """Where the gateway, the load processes (mock, Redis) and wrk run in a variant."""
    where = dict(VARIANTS[variant])
    if not pin:
        where |= {"gateway": None, "load": None, "wrk": None}
        where["note"] += " (unpinned: no two cores)"
    return where


def measure(
    gateway: fleet.GatewayProc,
    parties: dict[str, list[int]],
    url: str,
    headers: dict[str, str],
    connections: int,
    args: argparse.Namespace,
    use_wrk: bool,
    wrk_cpus: str | None,
) -> dict[str, Any]:
    """Warm-up, then one window: load numbers and the CPU of every party."""
    body = json.dumps({"input": PROMPT}).encode()
    drive: dict[str, Any] = {"expect": COMPLETED, "use_wrk": use_wrk, "cpus": wrk_cpus}
    ours = gateway.pids() + [pid for pids in parties.values() for pid in pids]
    quiet = fleet.wait_for_quiet(sorted(BOTH), ours, args.quiet_pct, args.quiet_wait)
    warm = fleet.drive(url, body, headers, connections=connections, seconds=args.warmup, **drive)
    workers = gateway.serving_pids()
    groups = {"gateway": gateway.pids(), **parties}
    groups |= {f"worker {pid}": [pid] for pid in workers}
    window = fleet.GroupCpu(groups, cores=sorted(BOTH))
    load = fleet.drive(url, body, headers, connections=connections, seconds=args.duration, **drive)
    cpu = window.close()
    wall, requests = cpu["wall_s"], max(load.requests, 1)
    accounted = sum(cpu[name] for name in ("gateway", *parties)) + cpu["reaped_children_s"]
    parts = {
        "gateway": cpu["gateway"],
        **{name: cpu[name] for name in parties},
        "load generator": cpu["reaped_children_s"] if use_wrk else None,
        "other (rest of cores 0-1)": max(0.0, cpu["cores_busy_s"] - accounted),
    }
    return {
        **load.as_dict(),
        "warmup_ok": warm.ok,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_request": {k: v * 1000 / requests for k, v in parts.items() if v is not None},
        "cores_used": {k: v / wall for k, v in parts.items() if v is not None},
        "cores_busy": cpu["cores_busy_s"] / wall,
        "core_busy_pct": {str(c): cpu[f"core{c}_busy_s"] / wall * 100 for c in sorted(BOTH)},
        "before": quiet,
        "worker_cpu_share": [cpu[f"worker {pid}"] / max(cpu["gateway"], 1e-9) for pid in workers],
        "gateway_req_per_core_s": load.requests / cpu["gateway"] if cpu["gateway"] else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=3.0, help="discarded seconds per point")
    parser.add_argument("--connections", default="32", help="connection counts, comma separated")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of 1 and 2 workers")
    parser.add_argument(
        "--variants",
        default="1,2",
        help="configurations, in this order each round: 1, 2 and the diagnostics 1-shared "
        "(1 worker in the layout of 2), 1-mp (1 worker with multiprocess metrics)",
    )
    parser.add_argument("--loadgen", action="store_true", help="bench.loadgen even if wrk exists")
    parser.add_argument("--pg", default=fleet.PG_ADMIN_DSN, help="PostgreSQL admin DSN")
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=10.0,
        help="before each point, wait until others use less than this %% of the two cores",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="at most this many seconds (0: never)"
    )
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not {"1", "2"} <= set(args.variants):
        parser.error(f"--variants: must include 1 and 2, known: {', '.join(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin = can_pin()
    if not pin:
        print("warning: cores 0 and 1 are not both available; running unpinned", file=sys.stderr)
    use_wrk = wrk.available() and not args.loadgen
    started = datetime.now(UTC)
    print(
        f"workers: 1 vs 2 workers at {args.connections} connections, {args.duration:g} s per "
        f"point after {args.warmup:g} s warm-up, {args.rounds} round(s); PostgreSQL usage, "
        f"Redis limits; load: {'wrk' if use_wrk else 'bench.loadgen (in this process)'}",
        flush=True,
    )
    points: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-workers-") as tmp:
        bench = Bench(
            duration=args.duration,
            warmup=args.warmup,
            connections=args.connections,
            sdk_concurrency=1,
            redis_url=None,
            pin=pin,
            tmp=Path(tmp),
            use_wrk=use_wrk,
        )
        with fleet.PgDatabase(args.pg) as database:
            try:
                mock, mock_port = start_mock(bench, LOAD)
                redis_url = start_redis(bench)
                redis = next((c for c in bench.children if c.name == "redis"), None)
                parties = {"mock LLM": [mock.pid]}
                if redis is not None:
                    parties["redis"] = [redis.pid]
                token = fleet.admin_token()
                env = fleet.gateway_env(bench, mock_port, database.url, token, redis_url)
                fleet.migrate(env)
                key = None
                for round_no in range(args.rounds):
                    # Each round starts one variant later (1,2 then 2,1...): no variant is
                    # always measured first, after the same predecessor.
                    shift = round_no % len(args.variants)
                    order = args.variants[shift:] + args.variants[:shift]
                    for variant in order:
                        where = layout(variant, pin)
                        workers = where["workers"]
                        for pids in parties.values():
                            for pid in pids:
                                if where["load"] is not None:
                                    fleet.set_affinity(pid, where["load"])
                        if where["load"] is not None:
                            os.sched_setaffinity(0, where["load"])
                        variant_env = dict(env)
                        if where.get("multiprocess_metrics"):
                            metrics = Path(tmp) / f"multiproc-{round_no}"
                            metrics.mkdir()
                            variant_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
                        gateway = fleet.launch_gateway(
                            bench, variant_env, workers=workers, cpus=where["gateway"]
                        )
                        try:
                            if key is None:
                                key = fleet.seed(
                                    gateway.base, token, {AGENT: AGENT_SPEC}, BENCH_LIMITS
                                )
                            url = f"{gateway.base}/v1/agents/{AGENT}/runs"
                            headers = {"Authorization": f"Bearer {key}"}
                            for conns in args.connections:
                                all_parties = parties | {
                                    "postgres": postgres_backends(database.name)
                                }
                                point = measure(
                                    gateway,
                                    all_parties,
                                    url,
                                    headers,
                                    conns,
                                    args,
                                    use_wrk,
                                    where["wrk"],
                                )
                                point |= {"variant": variant, "workers": workers}
                                point["round"] = round_no
                                point["layout"] = where["note"]
                                points.append(point)
                                print(
                                    f"  [{variant}] {workers} worker(s) c={conns}: "
                                    f"{point['rps']:.0f} req/s, "
                                    f"gateway {point['cores_used']['gateway']:.2f} cores, "
                                    f"{point['cpu_ms_per_request']['gateway']:.2f} ms CPU/req, "
                                    f"errors {point['errors']} (others used "
                                    f"{point['before']['others_busy_pct']:.0f} % of the cores "
                                    f"before it)",
                                    flush=True,
                                )
                            last = round_no == args.rounds - 1 and variant == order[-1]
                            if last:
                                usage = check_usage(gateway.base, key, points)
                        finally:
                            fleet.stop_child(bench, gateway.child)
            except BaseException:
                for child in bench.children:
                    print(f"--- {child.name} log tail ---\n{child.tail()}", file=sys.stderr)
                raise
            finally:
                bench.stop_all()

    summary = summarise(points, args.connections)
    print_report(points, summary)
    print(
        f"\nusage recorded in PostgreSQL: {usage.get('recorded_runs')} runs >= "
        f"{usage.get('successful_requests')} successful requests: "
        f"{'PASS' if usage.get('ok') else 'FAIL'}"
    )
    out = fleet.write_result(
        "workers",
        started,
        {
            "options": vars(args),
            "load_generator": "wrk" if use_wrk else "bench.loadgen",
            "pinned": pin,
            "layouts": {v: layout(v, pin)["note"] for v in args.variants},
            "points": points,
            "summary": summary,
            "usage": usage,
        },
    )
    print(f"\nresults: {out}")
    errors = sum(p["errors"] for p in points)
    return 0 if usage.get("ok") and not errors else 1


def check_usage(base: str, key: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """Every successful run (warm-ups included) has its usage record in PostgreSQL. The gateways
    stopped before flushed theirs on SIGINT; this one flushes every 0.5 s."""
    expected = sum(p["ok"] + p["warmup_ok"] for p in points)
    deadline = time.monotonic() + 15
    recorded = 0
    while time.monotonic() < deadline:
        report = http_json("GET", f"{base}/v1/usage?group_by=agent", key)
        recorded = sum(row["runs"] for row in report["data"] if row.get("agent") == AGENT)
        if recorded >= expected:
            break
        time.sleep(0.5)
    return {"recorded_runs": recorded, "successful_requests": expected, "ok": recorded >= expected}


def variant_medians(points: list[dict[str, Any]], variant: str, conns: int) -> dict[str, float]:
    rows = [p for p in points if p["variant"] == variant and p["connections"] == conns]
    if not rows:
        return {}

    def med(values: list[float]) -> float:
        return statistics.median(values)

    return {
        "rps": med([p["rps"] for p in rows]),
        "gateway_cores": med([p["cores_used"]["gateway"] for p in rows]),
        "gateway_cpu_ms_per_request": med([p["cpu_ms_per_request"]["gateway"] for p in rows]),
        "gateway_req_per_core_s": med([p["gateway_req_per_core_s"] or 0.0 for p in rows]),
        "cores_busy": med([p["cores_busy"] for p in rows]),
    }


def summarise(points: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for conns in connections:
        one, two = variant_medians(points, "1", conns), variant_medians(points, "2", conns)
        if not one or not two:
            continue
        raw = two["rps"] / one["rps"] if one["rps"] else 0.0
        per_core = two["gateway_req_per_core_s"] / one["gateway_req_per_core_s"]
        projected = 2 * per_core
        variants = sorted({p["variant"] for p in points})
        out[str(conns)] = {
            "one_worker": one,
            "two_workers": two,
            "diagnostics": {
                v: variant_medians(points, v, conns) for v in variants if v not in ("1", "2")
            },
            "raw_ratio": raw,
            "per_core_ratio": per_core,
            "projected_ratio_two_dedicated_cores": projected,
            "target": TARGET_RATIO,
            "raw_pass": raw >= TARGET_RATIO,
            "projected_pass": projected >= TARGET_RATIO,
        }
    return out


def print_report(points: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print()
    header = (
        f"{'variant':>8} {'round':>5} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'errors':>6} | {'CPU ms/req: gateway':>19} {'mock':>5} {'redis':>5} {'pg':>5} "
        f"{'wrk':>5} {'other':>5} | {'gw cores':>8} {'core0/1 busy %':>14} {'worker split %':>14}"
    )
    print(header)
    for p in points:
        ms = p["cpu_ms_per_request"]
        split = (
            "/".join(f"{s * 100:.0f}" for s in p["worker_cpu_share"]) if p["workers"] > 1 else ""
        )
        busy = "/".join(f"{v:.0f}" for v in p["core_busy_pct"].values())
        print(
            f"{p['variant']:>8} {p['round']:>5} {p['connections']:>5} {fmt(p['rps'], 1):>8} "
            f"{fmt(p['p50_ms']):>7} {fmt(p['p99_ms']):>8} {p['errors']:>6} | "
            f"{fmt(ms['gateway']):>19} {fmt(ms.get('mock LLM')):>5} {fmt(ms.get('redis')):>5} "
            f"{fmt(ms.get('postgres')):>5} {fmt(ms.get('load generator')):>5} "
            f"{fmt(ms.get('other (rest of cores 0-1)')):>5} | "
            f"{fmt(p['cores_used']['gateway']):>8} {busy:>14} {split:>14}"
        )
    for conns, s in summary.items():
        one, two = s["one_worker"], s["two_workers"]
        print(f"\n{conns} connections (medians of the rounds):")
        print(
            f"  1 worker:  {one['rps']:7.1f} req/s on {one['gateway_cores']:.2f} gateway cores "
            f"= {one['gateway_req_per_core_s']:.1f} req per gateway-core-second "
            f"({one['gateway_cpu_ms_per_request']:.2f} ms CPU/req)"
        )
        print(
            f"  2 workers: {two['rps']:7.1f} req/s on {two['gateway_cores']:.2f} gateway cores "
            f"= {two['gateway_req_per_core_s']:.1f} req per gateway-core-second "
            f"({two['gateway_cpu_ms_per_request']:.2f} ms CPU/req)"
        )
        for variant, d in s["diagnostics"].items():
            more = d["gateway_cpu_ms_per_request"] / one["gateway_cpu_ms_per_request"] - 1
            print(
                f"  [{variant}]: {d['rps']:7.1f} req/s, {d['gateway_cpu_ms_per_request']:.2f} ms "
                f"CPU/req ({more * 100:+.0f} % against 1 worker): {VARIANTS[variant]['note']}"
            )
        verdict = "PASS" if s["raw_pass"] else "MISS"
        print(
            f"  raw ratio req/s(2)/req/s(1):               {s['raw_ratio']:.2f}x  "
            f"target >= {s['target']}x  {verdict}"
        )
        verdict = "PASS" if s["projected_pass"] else "MISS"
        print(
            f"  per gateway-core ratio:                    {s['per_core_ratio']:.2f}  "
            f"(1.00 = a request costs the same CPU with 2 workers)"
        )
        print(
            "  projected on two dedicated cores (2 x it): "
            f"{s['projected_ratio_two_dedicated_cores']:.2f}x  target >= {s['target']}x  {verdict}"
        )
    print(
        "\nnote: with 2 workers the mock LLM, Redis, PostgreSQL and wrk run on the same two cores "
        "as the workers, so the raw ratio is capped by what they leave (see 'gw cores'); the "
        "projection assumes each worker would get a full core and the CPU per request measured "
        "here, i.e. no contention that appears only at full two-core speed (PostgreSQL, Redis, "
        "the shared listening socket)."
    )


if __name__ == "__main__":
    sys.exit(main())
