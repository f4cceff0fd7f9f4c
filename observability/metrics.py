"""The gateway's own `gateway_*` Prometheus series, defined in this one module.

Label values are bounded by design: the tenant label is the tenant's slug (at most
`GATEWAY_METRICS_MAX_TENANTS` distinct values per worker, the rest under `tenant="_other"`),
never a user id, key, prompt or raw path. Model, agent and tool labels come from agent specs
the operator controls.

Multi-worker correctness: when `gateway serve --workers N` (N > 1) sets `PROMETHEUS_MULTIPROC_DIR`
for its workers, prometheus_client keeps every value in per-process files that `/metrics` sums
(see `observability.exposition`). Each gauge below therefore declares how its per-worker values
combine (`multiprocess_mode`); counters and histograms always sum.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from observability.context import add_tokens

OTHER_TENANT = "_other"
"""The label of tenants (and tools) past a worker's cap: no slug can take it (slugs are
`[a-z0-9-]`), so a tenant named `other` never shares its series."""
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

RUNS = Counter("gateway_runs_total", "Agent runs by final status.", ["tenant", "agent", "status"])
RUN_DURATION = Histogram(
    "gateway_run_duration_seconds",
    "Wall time of agent runs.",
    ["tenant", "agent"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_CALLS = Counter(
    "gateway_model_calls_total",
    "Successful model calls made by runs.",
    ["tenant", "agent", "model"],
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Model tokens by type (input, output, cached, reasoning).",
    ["tenant", "agent", "model", "type"],
)
UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests_total",
    "Model calls by model and outcome (`ok`, an HTTP status, `timeout`, `unreachable`, "
    "`bad_response`).",
    ["model", "status"],
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total",
    "Failed upstream attempts that were retried, by model and why (an HTTP status, `timeout`, "
    "`unreachable`); a model call's final outcome is counted in gateway_upstream_requests_total.",
    ["model", "status"],
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_request_duration_seconds",
    "Latency of each model call (timed by the run's hooks), by outcome: the statuses of "
    "gateway_upstream_requests_total (`ok`, an HTTP status, `timeout`, `unreachable`, "
    "`bad_response`, `cancelled`).",
    ["model", "status"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from request to the first streamed text delta.",
    ["tenant", "agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "gateway_runs_in_flight", "Runs in progress.", ["tenant"], multiprocess_mode="livesum"
)
USAGE_QUEUE_DEPTH = Gauge(
    "gateway_usage_queue_depth",
    "Usage records waiting to be written.",
    multiprocess_mode="livesum",
)
USAGE_WRITE_FAILURES = Counter(
    "gateway_usage_write_failures_total", "Failed usage batch writes (retried, never dropped)."
)
USAGE_DEAD_LETTERS = Counter(
    "gateway_usage_dead_letters_total",
    "Usage records the database refused, quarantined by sink (table, file, log).",
    ["sink"],
)
USAGE_SPILLED = Counter(
    "gateway_usage_spilled_total",
    "Usage records written to the local spill file, by reason (shutdown, overflow).",
    ["reason"],
)
# Every label value known up front is exported at 0 from the start: Prometheus's
# `increase()` cannot see the first increment of a series that appears with it (the first
# dead letter, or spill, would never fire its alert).
for _sink in ("table", "file", "log"):
    USAGE_DEAD_LETTERS.labels(_sink)
for _reason in ("shutdown", "overflow"):
    USAGE_SPILLED.labels(_reason)
USAGE_REPLAYED = Counter(
    "gateway_usage_replayed_total", "Usage records replayed from the spill file into the database."
)
RATE_LIMIT_REJECTIONS = Counter(
    "gateway_rate_limit_rejections_total",
    "Requests refused by a limit or quota (429), by the limit's code.",
    ["tenant", "code"],
)
LIMITS_DEGRADED = Counter(
    "gateway_limits_degraded_total",
    "Limit checks that fell back to per-replica memory because Redis was unavailable.",
)
TENANT_TOKENS_PER_DAY_LIMIT = Gauge(
    "gateway_tenant_tokens_per_day_limit",
    "The tenant's configured daily token quota (+Inf: unlimited), as of its last run.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
TENANT_SPEND_PER_DAY_LIMIT = Gauge(
    "gateway_tenant_spend_per_day_limit_usd",
    "The tenant's configured daily spend limit in USD (+Inf: unlimited), as of its last run.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
TENANT_SPEND_PER_MONTH_LIMIT = Gauge(
    "gateway_tenant_spend_per_month_limit_usd",
    "The tenant's configured monthly spend limit in USD (+Inf: unlimited), as of its last run.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
SPEND = Counter(
    "gateway_spend_usd_total",
    "Model spend in USD by tenant and model, priced when the run started (unpriced runs: 0).",
    ["tenant", "model"],
)
TOOL_CALLS = Counter(
    "gateway_tool_calls_total",
    "Tool calls by tool name, kind (`builtin`, `http`, `mcp`) and outcome (`ok`, `error`, "
    "`timeout`, `refused`, `invalid_arguments`, `unreachable`, `declined`).",
    ["tool", "tool_type", "status"],
)
TOOL_DURATION = Histogram(
    "gateway_tool_call_duration_seconds",
    "Wall time of tool calls as the gateway sees them, by kind.",
    ["tool_type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EGRESS_REFUSALS = Counter(
    "gateway_egress_refusals_total",
    "Outbound URLs or addresses refused by the egress guard, by where the check ran "
    "(`url`: the URL itself, `connect`: the resolved address).",
    ["stage"],
)
RUNS_WAITING = Gauge(
    "gateway_runs_waiting_for_approval",
    "Runs paused for a human decision and not expired, in the whole deployment (counted in "
    "the database by each replica every few seconds and after each pause or resume).",
    multiprocess_mode="max",
)
HANDOFFS = Counter("gateway_handoffs_total", "Agent handoffs.", ["tenant"])
GUARDRAILS = Counter(
    "gateway_guardrails_total", "Guardrail checks by outcome.", ["tenant", "triggered"]
)
WORKERS = Gauge(
    "gateway_worker_start_time_seconds",
    "Start time of each live worker process (one series per worker).",
    multiprocess_mode="liveall",
)
# Set as the series is made: in multiprocess mode it exists (at 0) from here on, and a worker
# still starting would otherwise show 1970 as its start for the seconds its startup takes.
WORKERS.set(time.time())


class _TenantLabels:
    """The label values (tenant slugs, tool names) admitted so far in this process (bounded by
    `limit`; later ones are `_other`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted: set[str] = set()
        self._lock = threading.Lock()

    def label(self, slug: str) -> str:
        if slug in self.admitted:
            return slug
        with self._lock:
            if slug in self.admitted:
                return slug
            if len(self.admitted) >= self.limit:
                return OTHER_TENANT
            self.admitted.add(slug)
            return slug


_tenants = _TenantLabels(limit=500)
_tools = _TenantLabels(limit=500)
"""Tool names are chosen by tenants: the `tool` label takes the first 500 a worker sees."""


def configure_tenant_labels(max_tenants: int) -> None:
    """Set the cap on distinct tenant label values (`GATEWAY_METRICS_MAX_TENANTS`).

    Tenants already admitted keep their label; the cap applies to new ones. The bound is per
    worker process: with W workers at most W x `max_tenants` values can appear in the worst case
    (each worker admits the first tenants it sees).
    """
    _tenants.limit = max_tenants


def tenant_label(slug: str) -> str:
    """The value of the `tenant` label for a tenant (every metric goes through this)."""
    return _tenants.label(slug)


def record_guardrail(tenant: str, *, triggered: bool) -> None:
    """Count one guardrail check (the gateway's own checks and the input classifier)."""
    GUARDRAILS.labels(tenant_label(tenant), "true" if triggered else "false").inc()


def record_run(
    *,
    tenant: str,
    agent: str,
    status: str,
    duration_s: float,
    tokens: int,
    limits: Mapping[str, Any] | None = None,
) -> None:
    """Count one finished run and note its tenant's daily quota and spend limits (each
    model's calls, tokens and spend: `record_model_usage`).

    Args:
        tenant: The tenant's slug (capped through `tenant_label`).
        agent: The agent's name.
        status: The run's final status (`completed`, `failed`, `cancelled`).
        duration_s: Wall time of the run.
        tokens: Input plus output tokens over all model calls.
        limits: The tenant's limits (`tokens_per_day` feeds the quota gauge, the spend limits
            the spend limit gauges).
    """
    label = tenant_label(tenant)
    RUNS.labels(label, agent, status).inc()
    RUN_DURATION.labels(label, agent).observe(duration_s)
    if limits is not None:
        note_tenant_limits(tenant, limits)
    add_tokens(tokens, tenant=tenant, agent=agent)


def note_tenant_limits(tenant: str, limits: Mapping[str, Any]) -> None:
    """Set the tenant's daily quota and spend limit gauges (from a settled run, or a refused
    one: a tenant whose every run is refused still shows its current limits)."""
    label = tenant_label(tenant)
    if label == OTHER_TENANT:
        return
    quota = limits.get("tokens_per_day")
    TENANT_TOKENS_PER_DAY_LIMIT.labels(label).set(
        float(quota) if isinstance(quota, int) else math.inf
    )
    for window, gauge in (
        ("day", TENANT_SPEND_PER_DAY_LIMIT),
        ("month", TENANT_SPEND_PER_MONTH_LIMIT),
    ):
        gauge.labels(label).set(_usd_or_inf(limits.get(f"spend_per_{window}_usd")))


def record_model_usage(
    *,
    tenant: str,
    agent: str,
    model: str,
    requests: int,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
    cost_pico: int | None = None,
) -> None:
    """Count what one model's calls of a finished run used (a run calling a handoff target
    or an input classifier on another model counts each model's own share).

    Args:
        tenant: The tenant's slug (capped through `tenant_label`).
        agent: The run's agent (its entry agent's name).
        model: The model called.
        requests: Successful calls of that model.
        input_tokens: Their input tokens.
        output_tokens: Their output tokens.
        cached_tokens: Cached input tokens (a part of `input_tokens`).
        reasoning_tokens: Reasoning tokens (a part of `output_tokens`).
        cost_pico: What they cost in pico-dollars (None: the model has no price).
    """
    label = tenant_label(tenant)
    if requests:
        MODEL_CALLS.labels(label, agent, model).inc(requests)
    for kind, value in (
        ("input", input_tokens),
        ("output", output_tokens),
        ("cached", cached_tokens),
        ("reasoning", reasoning_tokens),
    ):
        if value:
            TOKENS.labels(label, agent, model, kind).inc(value)
    if cost_pico:
        # A float is fine for a metric (a rate on a dashboard); billing reads the exact records.
        SPEND.labels(label, model).inc(cost_pico / 1e12)


def _usd_or_inf(value: Any) -> float:
    try:
        return float(value) if value is not None else math.inf
    except (TypeError, ValueError):
        return math.inf


def record_tool_call(tool: str, tool_type: str, status: str, seconds: float) -> None:
    """One finished tool call (of the tool named `tool`): its outcome and its latency."""
    TOOL_CALLS.labels(_tools.label(tool), tool_type, status).inc()
    TOOL_DURATION.labels(tool_type).observe(seconds)


def record_first_token(tenant: str, agent: str, seconds: float) -> None:
    """Observe the time to the first streamed text delta of a run."""
    TIME_TO_FIRST_TOKEN.labels(tenant_label(tenant), agent).observe(seconds)


def record_model_call(model: str, *, status: str, seconds: float) -> None:
    """One model call's latency, by outcome (the statuses of `gateway_upstream_requests_total`:
    `cancelled` for a call the run ended without an answer or an upstream failure)."""
    UPSTREAM_DURATION.labels(model, status).observe(seconds)


def record_upstream_retry(model: str, status: str) -> None:
    """One failed upstream attempt that the client retries."""
    UPSTREAM_RETRIES.labels(model, status).inc()


def record_handoff(tenant: str) -> None:
    """One handoff between agents of a run."""
    HANDOFFS.labels(tenant_label(tenant)).inc()
