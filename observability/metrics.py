"""Prometheus metrics: HTTP metrics by route template, and the gateway's own `gateway_*` series.

Label values are bounded by design: the tenant label is the tenant's slug, never a user id,
key, prompt or raw path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from prometheus_fastapi_instrumentator.metrics import default as default_http_metrics

RUNS = Counter("gateway_runs_total", "Agent runs by final status.", ["tenant", "agent", "status"])
RUN_DURATION = Histogram(
    "gateway_run_duration_seconds",
    "Wall time of agent runs.",
    ["tenant", "agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Model tokens by type (input, output, cached, reasoning).",
    ["tenant", "agent", "model", "type"],
)
UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests_total", "Model calls by model and outcome.", ["model", "status"]
)
IN_FLIGHT = Gauge("gateway_runs_in_flight", "Runs in progress.", ["tenant"])
USAGE_QUEUE_DEPTH = Gauge("gateway_usage_queue_depth", "Usage records waiting to be written.")
RATE_LIMIT_REJECTIONS = Counter(
    "gateway_rate_limit_rejections_total",
    "Requests refused by a limit or quota (429), by the limit's code.",
    ["tenant", "code"],
)
LIMITS_DEGRADED = Counter(
    "gateway_limits_degraded_total",
    "Limit checks that fell back to per-replica memory because Redis was unavailable.",
)
TOOL_CALLS = Counter(
    "gateway_tool_calls_total", "Tool calls by tool and outcome.", ["tool", "status"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from request to the first streamed text delta.",
    ["tenant", "agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
USAGE_WRITE_FAILURES = Counter(
    "gateway_usage_write_failures_total", "Failed usage batch writes (retried, never dropped)."
)


def tenant_label(slug: str) -> str:
    """The value of the `tenant` label for a tenant (every metric goes through this)."""
    return slug


def record_run(
    *,
    tenant: str,
    agent: str,
    model: str,
    status: str,
    duration_s: float,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
) -> None:
    """Count one finished run and its tokens."""
    tenant = tenant_label(tenant)
    RUNS.labels(tenant, agent, status).inc()
    RUN_DURATION.labels(tenant, agent).observe(duration_s)
    for kind, value in (
        ("input", input_tokens),
        ("output", output_tokens),
        ("cached", cached_tokens),
        ("reasoning", reasoning_tokens),
    ):
        if value:
            TOKENS.labels(tenant, agent, model, kind).inc(value)


@cache
def _http_instrumentation() -> Callable[[Info], None]:
    # The HTTP series are registered once per process: an app built later in the same process
    # (tests, reloads) reuses them instead of failing to register duplicates and going silent.
    instrumentation = default_http_metrics()
    assert instrumentation is not None, "HTTP metrics were registered outside this module"
    return instrumentation


def install_http_metrics(app: FastAPI) -> None:
    """HTTP request metrics labelled by route template, and `GET /metrics`."""
    Instrumentator(
        should_group_status_codes=False,
        should_ignore_untemplated=True,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
    ).add(_http_instrumentation()).instrument(app).expose(app, include_in_schema=False)
