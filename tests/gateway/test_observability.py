"""Health probes and the Prometheus metrics an operator scrapes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.gateway.conftest import Gateway, Tenant


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_health_and_readiness(gateway: Gateway) -> None:
    r = await gateway.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await gateway.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


async def test_health_probes_answer_head(gateway: Gateway) -> None:
    """Load balancers that probe with HEAD get the probe's status, not 405."""
    for path in ("/healthz", "/readyz"):
        r = await gateway.client.head(path)
        assert r.status_code == 200, path


async def test_readiness_fails_when_the_database_is_gone(gateway: Gateway) -> None:
    from gateway.core.db import Database

    original = gateway.app.state.db
    unreachable = Database("sqlite+aiosqlite:////nonexistent-dir/x.db")
    gateway.app.state.db = unreachable
    try:
        r = await gateway.client.get("/readyz")
    finally:
        gateway.app.state.db = original
        await unreachable.dispose()
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "unavailable"


async def test_readiness_fails_on_a_database_never_migrated(tmp_path: Path) -> None:
    """A replica on a database nobody ran `gateway db upgrade` on answers every request with a
    503: it must not report itself ready to a load balancer."""
    from tests.conftest import make_settings, started_app

    async for app in started_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"database": "not migrated"}}


async def test_run_and_token_counters(gateway: Gateway, tenant: Tenant) -> None:
    before = (await gateway.client.get("/metrics")).text
    r = await gateway.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello metrics"}, headers=tenant.headers
    )
    usage = r.json()["usage"]
    after = (await gateway.client.get("/metrics")).text
    labels = {"tenant": "acme", "agent": "assistant"}
    runs = "gateway_runs_total"
    assert sample(after, runs, status="completed", **labels) == (
        sample(before, runs, status="completed", **labels) + 1
    )
    tokens = "gateway_tokens_total"
    for kind, value in (("input", usage["input_tokens"]), ("output", usage["output_tokens"])):
        delta = sample(after, tokens, type=kind, model="mock-model", **labels) - sample(
            before, tokens, type=kind, model="mock-model", **labels
        )
        assert delta == value
    # HTTP metrics use the route template, never the raw path or the key.
    assert 'handler="/v1/agents/{name}/runs"' in after
    assert "/v1/agents/assistant/runs" not in after
    assert tenant.key not in after


async def test_request_id_is_echoed_or_made(gateway: Gateway) -> None:
    r = await gateway.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await gateway.client.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk"
    assert len(r.headers["x-request-id"]) == 16
    # A credential sent as the request id (by mistake or to get it logged) is neither logged
    # nor echoed: an API key, alone or inside a longer id, or a JWT.
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    for credential in (tenant_key := "gw_" + "A1b2C3d4" * 4 + "0aBc9Z", f"req-{tenant_key}", jwt):
        r = await gateway.client.get("/healthz", headers={"X-Request-ID": credential})
        assert credential not in r.headers["x-request-id"]
        assert len(r.headers["x-request-id"]) == 16


async def test_unknown_routes_and_methods_use_the_error_shape(gateway: Gateway) -> None:
    r = await gateway.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    # Counted (a 404 flood shows on the dashboards), under handler "none", never its path.
    await gateway.client.get("/secret-scan/abc123")
    metrics = (await gateway.client.get("/metrics")).text
    assert 'http_requests_total{handler="none",method="GET",status="404"}' in metrics
    assert "nothing-here" not in metrics and "secret-scan" not in metrics
    r = await gateway.client.delete("/healthz")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"


async def test_openapi_is_served(gateway: Gateway) -> None:
    r = await gateway.client.get("/openapi.json")
    paths = r.json()["paths"]
    assert "/v1/agents/{name}/runs" in paths
    assert "/admin/tenants" in paths


async def test_readiness_reports_redis(sqlite_url: str, redis_url: str, redis_prefix: str) -> None:
    from tests.conftest import make_settings, started_app

    for url, expected in ((redis_url, "ok"), ("redis://127.0.0.1:1/0", "unavailable")):
        async for app in started_app(make_settings(sqlite_url, redis_url=url)):
            import httpx

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.get("/readyz")
            assert r.status_code == 200
            assert r.json()["checks"] == {"database": "ok", "redis": expected}
            assert r.json()["status"] == ("ready" if expected == "ok" else "degraded")
