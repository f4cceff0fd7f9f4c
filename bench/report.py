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
# Issue 12: the gateway with every control on (d) against the LiteLLM proxy (e).
TARGET_LITELLM_RATIO = 4.0
TARGET_FULL_ADDED_P50_MS = 2.0
TARGET_FULL_P99_MS_AT_32 = 150.0
TARGET_TTFB_OVER_ADDED_MS = 1.0

MOCK, MOCK_CHAT, SDK = "(a) mock LLM", "(a') mock LLM chat", "(b) SDK ceiling"
SDK_ALONE = "(b1) SDK alone, chat"
FULL, FULL_SSE = "(d) gateway all controls", "(d') gateway all controls SSE"
LITELLM, LITELLM_SSE = "(e) LiteLLM proxy", "(e') LiteLLM proxy SSE"


@dataclass
class Point:
    """One measured row of the table."""

    name: str
    load: LoadResult
    cpu: dict[str, float | None] = field(default_factory=dict)
    warmup_ok: int = 0
    ttfb_load: LoadResult | None = None
    """bench.loadgen's pass that timed the first body chunk, when wrk measured `load`."""

    @property
    def ttfb_p50_ms(self) -> float | None:
        source = self.ttfb_load or self.load
        return source.ttfb_p50_ms

    @property
    def ttfb_p99_ms(self) -> float | None:
        source = self.ttfb_load or self.load
        return source.ttfb_p99_ms

    @property
    def errors(self) -> int:
        """Errors of the measured window and of the TTFB pass."""
        return self.load.errors + (self.ttfb_load.errors if self.ttfb_load else 0)

    @property
    def incorrect(self) -> int:
        return self.load.incorrect + (self.ttfb_load.incorrect if self.ttfb_load else 0)

    @property
    def ok_total(self) -> int:
        """Successful requests sent to the process (warm-up and TTFB pass included)."""
        return self.load.ok + self.warmup_ok + (self.ttfb_load.ok if self.ttfb_load else 0)

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
            "ttfb_p50_ms": self.ttfb_p50_ms,
            "ttfb_p99_ms": self.ttfb_p99_ms,
            "ttfb_load": self.ttfb_load.as_dict() if self.ttfb_load else None,
        }


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(points: list[Point]) -> None:
    header = (
        "point",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "TTFB p50",
        "errors",
        "CPU ms/req",
        "core0 other%",
    )
    rows = [
        (
            p.name,
            str(p.load.connections),
            fmt(p.load.rps, 1),
            fmt(p.load.p50_ms),
            fmt(p.load.p99_ms),
            fmt(p.ttfb_p50_ms),
            str(p.errors),
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


def summary(
    points: list[Point], usage: dict[str, Any], full_usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The three targets of the issue, and the correctness checks ((c), and (d) when run)."""
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
    gateway_points = [p for p in points if p.name.startswith(("(c)", "(d)", "(d')"))]
    incorrect = sum(p.incorrect for p in gateway_points)
    usage_ok = bool(usage.get("ok")) and (full_usage is None or bool(full_usage.get("ok")))
    out["correctness"] = {
        "incorrect_200s": incorrect,
        "usage": usage,
        "pass": incorrect == 0 and usage_ok,
    }
    if full_usage is not None:
        out["correctness"]["usage_all_controls"] = full_usage
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
    if (f := c.get("usage_all_controls")) is not None:
        line(
            "(d) usage recorded >= ok (PostgreSQL)",
            f"{f.get('recorded_runs')}>={f.get('successful_requests')}",
            f | {"target": "usage >= ok", "pass": bool(f.get("ok"))},
        )


def exact(points: list[Point], name: str, connections: int) -> Point | None:
    return next((p for p in points if p.name == name and p.load.connections == connections), None)


def _ratio_row(gateway: Point | None, litellm: Point | None, target: bool) -> dict[str, Any] | None:
    """Gateway req/s ÷ LiteLLM req/s; a target row needs 0 errors on both sides."""
    if gateway is None or litellm is None or litellm.load.rps <= 0:
        return None
    row: dict[str, Any] = {
        "value": gateway.load.rps / litellm.load.rps,
        "gateway_rps": gateway.load.rps,
        "litellm_rps": litellm.load.rps,
        "errors": {"gateway": gateway.errors, "litellm": litellm.errors},
    }
    if target:
        row["target"] = f">= {TARGET_LITELLM_RATIO:g}x, 0 errors"
        clean = gateway.errors == 0 and litellm.errors == 0
        row["pass"] = row["value"] >= TARGET_LITELLM_RATIO and clean
    return row


def comparison(points: list[Point]) -> dict[str, Any]:
    """Issue 12's rows: (d) the gateway with every control on against (a') the mock and
    (e) LiteLLM. A row whose points were not measured is left out."""
    out: dict[str, Any] = {}
    full1, full32 = exact(points, FULL, 1), exact(points, FULL, 32)
    sse1, sse32 = exact(points, FULL_SSE, 1), exact(points, FULL_SSE, 32)
    mock1 = exact(points, MOCK_CHAT, 1)
    rows = {
        "litellm_ratio_at_32": _ratio_row(full32, exact(points, LITELLM, 32), True),
        "litellm_ratio_at_1": _ratio_row(full1, exact(points, LITELLM, 1), False),
        "litellm_ratio_sse_at_32": _ratio_row(sse32, exact(points, LITELLM_SSE, 32), True),
        "litellm_ratio_sse_at_1": _ratio_row(sse1, exact(points, LITELLM_SSE, 1), False),
    }
    out |= {k: v for k, v in rows.items() if v is not None}
    added: float | None = None
    if full1 and mock1 and full1.load.p50_ms is not None and mock1.load.p50_ms is not None:
        added = full1.load.p50_ms - mock1.load.p50_ms
        out["full_added_p50_ms_at_1"] = {
            "value": added,
            "gateway_p50_ms": full1.load.p50_ms,
            "mock_p50_ms": mock1.load.p50_ms,
            "target": f"<= {TARGET_FULL_ADDED_P50_MS:g}",
            "pass": added <= TARGET_FULL_ADDED_P50_MS,
        }
    sdk1 = exact(points, SDK_ALONE, 1)
    if sdk1 and mock1 and sdk1.load.p50_ms is not None and mock1.load.p50_ms is not None:
        # The floor of (d)'s added p50: the SDK's own run loop and upstream client, no server.
        out["sdk_alone_added_p50_ms_at_1"] = {
            "value": sdk1.load.p50_ms - mock1.load.p50_ms,
            "sdk_p50_ms": sdk1.load.p50_ms,
        }
        if full1 and full1.load.p50_ms is not None:
            out["gateway_own_p50_ms_at_1"] = {"value": full1.load.p50_ms - sdk1.load.p50_ms}
    if full32 and full32.load.p99_ms is not None:
        out["full_p99_ms_at_32"] = {
            "value": full32.load.p99_ms,
            "target": f"<= {TARGET_FULL_P99_MS_AT_32:g}",
            "pass": full32.load.p99_ms <= TARGET_FULL_P99_MS_AT_32,
        }
    if sse1 and sse1.ttfb_p50_ms is not None and added is not None:
        over = sse1.ttfb_p50_ms - added
        out["sse_ttfb_p50_over_added_ms_at_1"] = {
            "value": over,
            "ttfb_p50_ms": sse1.ttfb_p50_ms,
            "added_p50_ms": added,
            "target": f"<= {TARGET_TTFB_OVER_ADDED_MS:g}",
            "pass": over <= TARGET_TTFB_OVER_ADDED_MS,
        }
    litellm_sse1 = exact(points, LITELLM_SSE, 1)
    if litellm_sse1 and litellm_sse1.ttfb_p50_ms is not None:
        out["litellm_sse_ttfb_p50_ms_at_1"] = {"value": litellm_sse1.ttfb_p50_ms}
    return out


def print_comparison(rows: dict[str, Any]) -> None:
    """The rows of `comparison`, PASS/MISS for those with a target, `info` for the others."""

    def line(label: str, value: str, item: dict[str, Any], unit: str = "") -> None:
        verdict = "info" if "pass" not in item else "PASS" if item["pass"] else "MISS"
        target = item["target"] + unit if "target" in item else "-"
        print(f"{label:<38} {value:<24} target {target:<24} {verdict}")

    def ratio(key: str, label: str) -> None:
        if (r := rows.get(key)) is not None:
            errors = r["errors"]["gateway"] + r["errors"]["litellm"]
            suffix = f", {errors} err" if errors else ""
            value = f"{r['value']:.2f}x ({r['gateway_rps']:.0f}/{r['litellm_rps']:.0f}){suffix}"
            line(label, value, r)

    if rows:
        print()
    ratio("litellm_ratio_at_32", "(d)/(e) req/s @32 conns")
    ratio("litellm_ratio_at_1", "(d)/(e) req/s @1 conn")
    if (a := rows.get("full_added_p50_ms_at_1")) is not None:
        line("(d) added p50 @1 conn (d - a')", f"{a['value']:.2f} ms", a, " ms")
    if (b := rows.get("sdk_alone_added_p50_ms_at_1")) is not None:
        line("  of which the SDK alone (b1 - a')", f"{b['value']:.2f} ms", b)
    if (g := rows.get("gateway_own_p50_ms_at_1")) is not None:
        line("  the gateway's own (d - b1)", f"{g['value']:.2f} ms", g)
    if (p := rows.get("full_p99_ms_at_32")) is not None:
        line("(d) p99 @32 conns", f"{p['value']:.1f} ms", p, " ms")
    ratio("litellm_ratio_sse_at_32", "(d')/(e') SSE req/s @32 conns")
    ratio("litellm_ratio_sse_at_1", "(d')/(e') SSE req/s @1 conn")
    if (t := rows.get("sse_ttfb_p50_over_added_ms_at_1")) is not None:
        value = f"{t['value']:+.2f} ms ({t['ttfb_p50_ms']:.2f}-{t['added_p50_ms']:.2f})"
        line("(d') TTFB p50 @1 - (d) added p50", value, t, " ms")
    if (lt := rows.get("litellm_sse_ttfb_p50_ms_at_1")) is not None:
        line("(e') LiteLLM TTFB p50 @1 conn", f"{lt['value']:.2f} ms", lt)


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
