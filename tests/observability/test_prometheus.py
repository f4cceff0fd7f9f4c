"""The shipped Prometheus config, alert rules and Grafana dashboards against a real Prometheus.

Prometheus (Debian's `prometheus` package, installed by `.ci/run`) scrapes a live gateway on
loopback every second; known traffic goes through the gateway; then every dashboard panel query
(template variables substituted) and every alert expression is evaluated through Prometheus'
HTTP API. Each must parse, each panel must return data, and the token panels must equal the
usage API's totals.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import unavailable
from tests.observability.live import ADMIN, LiveGateway, LiveTenant, free_port, serve_gateway

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
TENANT = "promtenant"
RPM_LIMIT = 12
TOKENS_PER_DAY = 1_000_000
SPEND_PER_DAY = "1000"
SPEND_PER_MONTH = "5000"
PRICE = {"input_per_mtok": "0.40", "cached_input_per_mtok": "0.10", "output_per_mtok": "1.60"}
SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__interval": "15s",
    "$__range": "1h",
    "$tenant": TENANT,
}


def _tools() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        unavailable(
            "Prometheus", "`prometheus`/`promtool` not on PATH (apt-get install prometheus)"
        )
    assert prometheus is not None and promtool is not None
    return prometheus, promtool


def _panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr with template variables substituted) for every target."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in SUBSTITUTIONS.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
                queries.append((dashboard["title"], panel["title"], expr))
    return queries


def _alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(item["value"][1]) for item in result]


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    _, promtool = _tools()
    for args in (
        ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    prometheus, _ = _tools()
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
        config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={path}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_scraped_twice(prom: str, expr: str) -> None:
    """Until Prometheus holds two samples of `expr`'s series (so rates see later increases)."""
    deadline = time.monotonic() + 30
    while not any(v >= 2 for v in _values(_query(prom, f"count_over_time({expr}[5m])"))):
        assert time.monotonic() < deadline, f"Prometheus never scraped {expr}"
        time.sleep(0.2)


def _drive_traffic(gw: LiveGateway, prom: str) -> tuple[LiveTenant, bool]:
    """Known traffic for TENANT; also whether the gateway answered 429 (limits in force).

    In two phases around two scrapes: series are born in the first, and the second increases
    them, so the rate-based panels have something to show.
    """
    limits = {
        "requests_per_minute": RPM_LIMIT,
        "tokens_per_day": TOKENS_PER_DAY,
        "spend_per_day_usd": SPEND_PER_DAY,
        "spend_per_month_usd": SPEND_PER_MONTH,
    }
    tenant = gw.create_tenant(TENANT, limits=limits)
    _tool_agents(gw, tenant)
    plain = [{"input": f"hello prometheus {i}"} for i in range(4)]
    # An HTTP tool call (to the gateway's own /healthz: a 405, an error output) and a run that
    # pauses for approval, on two more agents of the tenant.
    hooked = {"agent": "hooked", "input": 'Use ping {"n": "1"}'}
    approval = {"agent": "approver", "input": 'Use ping {"n": "2"}'}
    streamed = [{"input": f"stream to prometheus {i}", "stream": True} for i in range(3)]
    tool = [{"input": "What is 6*7? Use the calculator."} for _ in range(2)]
    fault = [{"input": "[[fault:500]] this call fails upstream"}]
    phases: list[list[dict[str, Any]]] = [
        [plain[0], streamed[0], tool[0]],
        plain[1:] + streamed[1:] + tool[1:] + fault + [hooked, approval],
    ]
    assert sum(map(len, phases)) == RPM_LIMIT
    with gw.client() as c:
        for number, bodies in enumerate(phases):
            for item in bodies:
                body = dict(item)
                agent = body.pop("agent", "assistant")
                r = c.post(f"/v1/agents/{agent}/runs", json=body, headers=tenant.headers)
                expected = 502 if "fault" in body["input"] else 200
                assert r.status_code == expected, r.text
            if number == 0:
                _wait_scraped_twice(
                    prom, f'gateway_time_to_first_token_seconds_count{{tenant="{TENANT}"}}'
                )
        extra = [
            c.post("/v1/agents/assistant/runs", json={"input": "over"}, headers=tenant.headers)
            for _ in range(2)
        ]
    rejected = any(r.status_code == 429 for r in extra)
    gw.wait_for_usage_runs(tenant, RPM_LIMIT + sum(r.status_code != 429 for r in extra))
    return tenant, rejected


def _tool_agents(gw: LiveGateway, tenant: LiveTenant) -> None:
    """Agents with an HTTP tool (one needing approval); and one refused URL (a 422 that the
    egress refusal counter sees)."""

    def agent(name: str, url: str, approval: bool) -> int:
        tool = {
            "type": "http",
            "name": "ping",
            "url": url,
            "parameters": {"type": "object", "properties": {"n": {"type": "string"}}},
            "requires_approval": approval,
        }
        spec = {"model": "mock-model", "tools": [tool]}
        with gw.client() as c:
            path = f"/admin/tenants/{tenant.id}/agents/{name}"
            return c.put(path, json=spec, headers=ADMIN).status_code

    assert agent("hooked", f"{gw.base_url}/healthz", False) == 201
    assert agent("approver", f"{gw.base_url}/healthz", True) == 201
    assert agent("refused", "https://169.254.169.254/latest", False) == 422


def _expr(queries: list[tuple[str, str, str]], title: str) -> str:
    return next(e for _, t, e in queries if t == title)


def _check_results(
    prom: str, queries: list[tuple[str, str, str]], tokens: dict[str, float], usage: dict[str, Any]
) -> None:
    totals = usage["totals"]
    # Token panels equal the usage API exactly.
    assert tokens["input"] == totals["input_tokens"] and tokens["output"] == totals["output_tokens"]
    calls = _values(_query(prom, _expr(queries, "Model calls in range")))
    assert sum(calls) == totals["requests"]
    by_agent = {
        (i["metric"]["agent"], i["metric"]["type"]): float(i["value"][1])
        for i in _query(prom, _expr(queries, "Tokens in range by agent and type"))
    }
    row = next(r for r in usage["data"] if r["agent"] == "assistant")
    assert by_agent[("assistant", "input")] == row["input_tokens"]
    assert by_agent[("assistant", "output")] == row["output_tokens"]

    # Latency panels hold real numbers, not only NaN.
    for title in ("Run latency percentiles", "Upstream latency p95 by model"):
        assert any(math.isfinite(v) for v in _values(_query(prom, _expr(queries, title))))
    # The traffic's shape shows up where it should.
    statuses = {
        i["metric"]["status"]
        for i in _query(prom, _expr(queries, "Upstream calls by model and status"))
    }
    assert {"ok", "500"} <= statuses
    tools = {
        i["metric"]["tool_type"]
        for i in _query(prom, _expr(queries, "Tool calls by type and status"))
    }
    assert {"builtin", "http"} <= tools
    waiting = _values(_query(prom, _expr(queries, "Runs waiting for approval")))
    assert waiting == [1]
    stages = {
        i["metric"]["stage"] for i in _query(prom, _expr(queries, "Egress refusals by stage"))
    }
    assert "url" in stages
    quota = _values(_query(prom, f'gateway_tenant_tokens_per_day_limit{{tenant="{TENANT}"}}'))
    assert quota == [TOKENS_PER_DAY]
    used = _values(_query(prom, _expr(queries, "Daily token quota used (rolling 24 h)")))
    assert used and 0 < used[0] < 1
    # Spend panels agree with the usage API's exact cost (a float metric: to a nano-dollar).
    spend = sum(_values(_query(prom, _expr(queries, "Spend in range by model (USD)"))))
    assert abs(spend - float(totals["cost_usd"])) < 1e-9 and spend > 0
    budget = _query(prom, f'gateway_tenant_spend_per_day_limit_usd{{tenant="{TENANT}"}}')
    assert _values(budget) == [float(SPEND_PER_DAY)]
    for title in ("Daily spend budget used (rolling 24 h)",
                  "Monthly spend budget used (rolling 30 days)"):  # fmt: skip
        share = _values(_query(prom, _expr(queries, title)))
        assert share and 0 < share[0] < 1, title

    # The tenant template variable lists the tenant.
    r = httpx.get(f"{prom}/api/v1/label/tenant/values", params={"match[]": "gateway_runs_total"})
    assert TENANT in r.json()["data"]

    # Every alert expression parses and evaluates; the loaded rules evaluate without errors.
    for _name, expr in _alert_exprs():
        _query(prom, expr)
    deadline = time.monotonic() + 30
    while True:
        rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"][0]["rules"]
        if len(rules) == len(_alert_exprs()) and all(
            r["health"] == "ok" and r["lastEvaluation"][:4] != "0001" for r in rules
        ):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)


async def _set_price(database_url: str) -> None:
    """The mock model's price, in the database before the gateway starts (it loads prices at
    start-up), so the spend panels have something to show."""
    from gateway.core.db import Database
    from tenants.price.schemas import PricePut
    from tenants.price.service import put_price

    db = Database(database_url)
    try:
        async with db.session() as session:
            await put_price(session, "mock-model", PricePut.model_validate(PRICE))
            await session.commit()
    finally:
        await db.dispose()


def test_dashboards_and_alerts_against_real_prometheus(
    tmp_path: Path, sqlite_url: str, mock_llm_base_url: str, prometheus_for: Any
) -> None:
    asyncio.run(_set_price(sqlite_url))
    with serve_gateway(
        tmp_path,
        sqlite_url,
        mock_llm_base_url,
        workers=1,
        GATEWAY_UPSTREAM_MAX_RETRIES="0",
        GATEWAY_EGRESS_ALLOW="127.0.0.0/8",
    ) as gw:
        prom = prometheus_for(gw.base_url.removeprefix("http://"))
        tenant, rejected = _drive_traffic(gw, prom)
        assert rejected, "no 429 past requests_per_minute: the rejection panels would be empty"
        usage = gw.usage_totals(tenant)
        queries = _panel_queries()
        # Poll until Prometheus has scraped the final state and every panel has data.
        deadline = time.monotonic() + 60
        while True:
            missing = [(d, t, e) for d, t, e in queries if not _query(prom, e)]
            tokens = {
                item["metric"]["type"]: float(item["value"][1])
                for item in _query(prom, _expr(queries, "Tokens in range by type"))
            }
            if not missing and tokens.get("output") == usage["totals"]["output_tokens"]:
                break
            assert time.monotonic() < deadline, f"panels without data: {missing}"
            time.sleep(0.5)

        _check_results(prom, queries, tokens, usage)


RULE_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # A tenant's first burst: its series appears with the burst already counted, which
      # increase() alone cannot see (it needs two samples).
      - series: 'gateway_tokens_total{{tenant="acme", agent="a", model="m", type="input"}}'
        values: '_x10 18000x60'
      - series: 'gateway_tenant_tokens_per_day_limit{{tenant="acme"}}'
        values: '20000x70'
      - series: 'gateway_spend_usd_total{{tenant="acme", model="m"}}'
        values: '_x10 0.9x60'
      - series: 'gateway_tenant_spend_per_day_limit_usd{{tenant="acme"}}'
        values: '1x70'
      - series: 'gateway_tenant_spend_per_month_limit_usd{{tenant="acme"}}'
        values: '1x70'
      # A tenant well within its quota, counting since before the window: no alert.
      - series: 'gateway_tokens_total{{tenant="calm", agent="a", model="m", type="input"}}'
        values: '1000+20x70'
      - series: 'gateway_tenant_tokens_per_day_limit{{tenant="calm"}}'
        values: '20000x70'
    alert_rule_test:
      - eval_time: 30m
        alertname: GatewayTenantNearDailyTokenQuota
        exp_alerts:
          - exp_labels: {{severity: ticket, tenant: acme}}
            exp_annotations:
              summary: "Tenant acme used over 80% of its daily token quota"
              description: "90% of tokens_per_day in the last 24 h."
      - eval_time: 30m
        alertname: GatewayTenantNearDailySpendBudget
        exp_alerts:
          - exp_labels: {{severity: ticket, tenant: acme}}
            exp_annotations:
              summary: "Tenant acme spent over 80% of its daily budget"
              description: "90% of spend_per_day_usd in the last 24 h; at 100% its runs get
                429 spend_per_day."
      - eval_time: 30m
        alertname: GatewayTenantNearMonthlySpendBudget
        exp_alerts:
          - exp_labels: {{severity: ticket, tenant: acme}}
            exp_annotations:
              summary: "Tenant acme spent over 80% of its monthly budget"
              description: "90% of spend_per_month_usd in the last 30 days; at 100% its runs
                get 429 spend_per_month."
"""


def test_the_quota_alerts_see_a_tenants_first_burst(tmp_path: Path) -> None:
    # promtool's rule unit tests on the shipped rules: a tenant whose series appear with 90 %
    # of its quota or budget already used is alerted (the increase()-only expressions gave
    # 0 for it, so the alert never fired), a calm one is not.
    _, promtool = _tools()
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(alerts=PROMETHEUS_DIR / "alerts.yml"))
    done = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dead_letter_and_spill_series_is_exported_from_the_start() -> None:
    # Their alerts use increase(): a series that appeared with its first increment would
    # never fire them.
    from prometheus_client import REGISTRY, generate_latest

    import observability.metrics  # noqa: F401 (registers the series)

    text = generate_latest(REGISTRY).decode()
    for series in (
        'gateway_usage_dead_letters_total{sink="table"}',
        'gateway_usage_dead_letters_total{sink="file"}',
        'gateway_usage_dead_letters_total{sink="log"}',
        'gateway_usage_spilled_total{reason="shutdown"}',
        'gateway_usage_spilled_total{reason="overflow"}',
    ):
        assert series in text, series
