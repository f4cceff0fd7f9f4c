"""Results of a benchmark run: the rows, the table, the verdicts against the issue's targets."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult

TARGET_RPS, TARGET_SHARE, TARGET_ADDED_P50_MS = 200.0, 0.65, 5.0


@dataclass
class Point:
    """One measured row of the table."""

    name: str
    load: LoadResult
    cpu: dict[str, float | None] = field(default_factory=dict)
    warmup_ok: int = 0

    @property
    def cpu_ms_per_request(self) -> float | None:
        cpu_s = self.cpu.get("cpu_s")
        return (
            cpu_s * 1000 / self.load.requests if cpu_s is not None and self.load.requests else None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.name,
            **self.load.as_dict(),
            **self.cpu,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "warmup_ok": self.warmup_ok,
        }


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(points: list[Point]) -> None:
    header = ("point", "conns", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req", "core0 other%")
    rows = [
        (
            p.name,
            str(p.load.connections),
            fmt(p.load.rps, 1),
            fmt(p.load.p50_ms),
            fmt(p.load.p99_ms),
            str(p.load.errors),
            fmt(p.cpu_ms_per_request),
            fmt(p.cpu.get("core_other_pct"), 1),
        )
        for p in points
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def find(points: list[Point], prefix: str, connections: int) -> Point | None:
    return next(
        (p for p in points if p.name.startswith(prefix) and p.load.connections == connections), None
    )


def summary(points: list[Point], usage: dict[str, Any]) -> dict[str, Any]:
    """The three targets of the issue, and the correctness checks."""
    mock1, gw1 = find(points, "(a)", 1), find(points, "(c)", 1)
    gw32 = find(points, "(c)", 32)
    sdk = next((p for p in points if p.name.startswith("(b)")), None)
    out: dict[str, Any] = {}
    if mock1 and gw1 and mock1.load.p50_ms is not None and gw1.load.p50_ms is not None:
        added = gw1.load.p50_ms - mock1.load.p50_ms
        out["added_p50_ms_at_1"] = {
            "value": added,
            "target": f"<= {TARGET_ADDED_P50_MS}",
            "pass": added <= TARGET_ADDED_P50_MS,
        }
    if gw32:
        ok = gw32.load.rps >= TARGET_RPS and gw32.load.errors == 0
        out["gateway_rps_at_32"] = {
            "value": gw32.load.rps,
            "errors": gw32.load.errors,
            "target": f">= {TARGET_RPS:.0f} req/s, 0 errors",
            "pass": ok,
        }
        if sdk and sdk.load.rps > 0:
            share = gw32.load.rps / sdk.load.rps
            out["gateway_share_of_sdk_at_32"] = {
                "value": share,
                "target": f">= {TARGET_SHARE:.0%}",
                "pass": share >= TARGET_SHARE,
            }
    gateway_points = [p for p in points if p.name.startswith("(c)")]
    incorrect = sum(p.load.incorrect for p in gateway_points)
    out["correctness"] = {
        "incorrect_200s": incorrect,
        "usage": usage,
        "pass": incorrect == 0 and bool(usage.get("ok")),
    }
    return out


def print_summary(result: dict[str, Any]) -> None:
    def line(label: str, value: str, item: dict[str, Any]) -> None:
        verdict = "PASS" if item["pass"] else "MISS"
        print(f"{label:<38} {value:<24} target {item.get('target', '-'):<24} {verdict}")

    if (a := result.get("added_p50_ms_at_1")) is not None:
        line(
            "gateway added p50 @1 conn (c - a)",
            f"{a['value']:.2f} ms",
            a | {"target": a["target"] + " ms"},
        )
    if (r := result.get("gateway_rps_at_32")) is not None:
        line("gateway @32 conns", f"{r['value']:.1f} req/s, {r['errors']} err", r)
    if (s := result.get("gateway_share_of_sdk_at_32")) is not None:
        line("gateway @32 / SDK ceiling runs/s", f"{s['value']:.1%}", s)
    c = result["correctness"]
    u = c["usage"]
    line(
        "correctness (completed, usage >= ok)",
        f"{c['incorrect_200s']} bad, {u.get('recorded_runs')}>={u.get('successful_requests')}",
        c | {"target": "0 bad, usage >= ok"},
    )


def environment() -> dict[str, Any]:
    """What the numbers depend on: commit, versions, machine."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for package in ("openai-agents", "openai", "aiohttp", "fastapi", "uvicorn", "pydantic"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
    )
    return {
        "commit": commit.stdout.strip() or None,
        "python": sys.version.split()[0],
        "versions": versions,
        "cpus": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
