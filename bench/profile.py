"""Summarise a py-spy speedscope profile: top functions by own and total time, and the share
of samples per component (FastAPI/pydantic, auth, SDK Runner, openai/HTTP client, SQL/usage,
metrics, tracing, …).

    python -m bench.profile /tmp/profile.speedscope.json [--top 25]

A sample is charged to the component of its innermost frame that belongs to a known
component, so standard-library and pydantic time (asyncio, json, validation, …) counts for
the library that called it, and the component shares add up to 100 %.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

# (component, path fragments), first match wins; checked innermost frame first.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("tracing", ("site-packages/agents/tracing/", "observability/tracing")),
    (
        "metrics",
        ("prometheus_client/", "prometheus_fastapi_instrumentator/", "observability/metrics"),
    ),
    ("auth", ("gateway/auth/", "tenants/api_key/", "tenants/admin/auth")),
    (
        "SQL/usage",
        ("sqlalchemy/", "aiosqlite/", "sqlmodel/", "asyncpg/", "gateway/usage/", "tenants/usage/"),
    ),
    ("SDK Runner", ("site-packages/agents/",)),
    (
        "openai client/httpx2/aiohttp",
        (
            "site-packages/openai/",
            "httpx2/",
            "httpx/",
            "httpcore/",
            "aiohttp/",
            "yarl/",
            "multidict/",
            "anyio/",
            "h11/",
        ),
    ),
    # The loop's own time (C: uvloop, socket I/O) shows as the frame that runs the loop.
    ("event loop/IO", ("uvicorn/_compat.py", "uvicorn/server.py", "asyncio/runners.py")),
    # pydantic is not listed: its time counts for whoever validates (SDK, openai, FastAPI).
    ("FastAPI/starlette/uvicorn", ("fastapi/", "starlette/", "uvicorn/", "httptools/")),
    ("gateway (other)", ("gateway/", "tenants/", "observability/")),
]
STDLIB = "stdlib/event loop/other"
ROOT_SHARE = 0.9


def component(file: str) -> str | None:
    for name, fragments in COMPONENTS:
        if any(fragment in file for fragment in fragments):
            return name
    return None


def label(frame: dict[str, Any]) -> str:
    file = frame.get("file") or ""
    short = file.split("site-packages/")[-1].split("/work/main/")[-1]
    return f"{frame.get('name', '?')} ({short}:{frame.get('line', '?')})"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Own/total samples per function and samples per component."""
    doc = json.loads(path.read_text())
    frames: list[dict[str, Any]] = doc["shared"]["frames"]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    samples = 0
    for profile in doc["profiles"]:
        weights = profile.get("weights") or [1] * len(profile["samples"])
        for stack, weight in zip(profile["samples"], weights, strict=True):
            if not stack:
                continue
            samples += weight
            names = [label(frames[i]) for i in stack]  # outermost first
            own[names[-1]] += weight
            for name in set(names):
                total[name] += weight
            group = next(
                (c for i in reversed(stack) if (c := component(frames[i].get("file") or ""))),
                STDLIB,
            )
            groups[group] += weight

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, v / samples * 100) for k, v in counter.most_common(n)] if samples else []

    # Frames on (nearly) every stack are the server's entry points: no information.
    for name in [k for k, v in total.items() if v >= ROOT_SHARE * samples]:
        del total[name]
    return {
        "sampled": samples,
        "unit": doc["profiles"][0].get("unit", "samples") if doc["profiles"] else "samples",
        "components": share(groups, len(groups)),
        "own": share(own, top),
        "total": share(total, top),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"{summary['sampled']:.2f} {summary['unit']} sampled (GIL held)")
    for title, key in (
        ("components", "components"),
        ("own time", "own"),
        ("total time, without the entry frames", "total"),
    ):
        print(f"\n{title} (% of samples):")
        for name, pct in summary[key]:
            print(f"  {pct:5.1f}  {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print_summary(summarise(args.path, args.top))


if __name__ == "__main__":
    main()
