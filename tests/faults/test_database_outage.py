"""A database outage is a clean, fast answer (real gateway processes, a real PostgreSQL behind
the suite's proxy, cut or swallowing packets): 503 `service_unavailable` with Retry-After,
never a dropped connection, never a wait past the configured timeouts; cached credentials
keep serving runs and their usage is written once the database is back."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _truncate
from tests.faults.processes import ADMIN, GatewayProcess, run, seed, sql, wait_for
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.faults

CONNECT_S, STATEMENT_S = 1.0, 2.0
BOUND_S = CONNECT_S + STATEMENT_S
"""The longest a request may wait on an unreachable database: connect + statement timeout."""


@pytest.fixture
def gateway(
    postgres_url: str,
    pg_proxy: tuple[FaultProxy, str],
    mock_llm_base_url: str,
    tmp_path: Path,
) -> Iterator[GatewayProcess]:
    asyncio.run(_truncate(postgres_url))
    _, proxied_url = pg_proxy
    process = GatewayProcess(
        proxied_url,
        tmp_path / "gateway.log",
        OPENAI_BASE_URL=mock_llm_base_url,
        GATEWAY_UPSTREAM_API="chat_completions",
        GATEWAY_DATABASE_CONNECT_TIMEOUT_S=str(CONNECT_S),
        GATEWAY_DATABASE_STATEMENT_TIMEOUT_S=str(STATEMENT_S),
        GATEWAY_DATABASE_RETRY_S="1",
    )
    yield process
    pg_proxy[0].forward()
    process.stop(signal.SIGTERM)


def keep_alive_requests(base_url: str, path: str, count: int) -> list[tuple[int, Any, str]]:
    """`count` GETs one after the other on ONE keep-alive connection: (status, error body,
    Retry-After). A connection the server dropped raises here."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    answers = []
    try:
        for _ in range(count):
            connection.request("GET", path, headers=ADMIN)
            response = connection.getresponse()
            body = json.loads(response.read())
            answers.append((response.status, body.get("error"), response.getheader("retry-after")))
    finally:
        connection.close()
    return answers


def test_a_cut_database_is_a_503_with_retry_after_and_the_connection_stays_open(
    gateway: GatewayProcess, pg_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, _ = pg_proxy
    assert keep_alive_requests(gateway.url, "/admin/tenants", 1)[0][0] == 200
    proxy.cut()
    started = time.monotonic()
    answers = keep_alive_requests(gateway.url, "/admin/tenants", 30)
    elapsed = time.monotonic() - started
    assert {(status, error["type"], error["code"]) for status, error, _ in answers} == {
        (503, "service_unavailable", "database_unavailable")
    }
    assert all(int(retry_after) >= 1 for _, _, retry_after in answers)
    assert elapsed < 5, elapsed
    proxy.forward()
    wait_for(lambda: keep_alive_requests(gateway.url, "/admin/tenants", 1)[0][0] == 200, 10, "up")


def _timed_get(url: str) -> tuple[float, int]:
    started = time.monotonic()
    r = httpx.get(url, headers=ADMIN, timeout=60)
    return time.monotonic() - started, r.status_code


def test_a_swallowing_database_never_holds_a_request_past_its_timeout(
    gateway: GatewayProcess, pg_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, _ = pg_proxy
    assert httpx.get(f"{gateway.url}/admin/tenants", headers=ADMIN).status_code == 200
    proxy.swallow()
    url = f"{gateway.url}/admin/tenants"
    # A burst in flight when the database stops answering: each waits at most the bound.
    with ThreadPoolExecutor(max_workers=10) as pool:
        burst = list(pool.map(_timed_get, [url] * 10))
    assert {status for _, status in burst} == {503}
    assert max(seconds for seconds, _ in burst) < BOUND_S + 1.5, burst
    # Then the short circuit answers at once while the database stays silent.
    after = [_timed_get(url) for _ in range(10)]
    assert {status for _, status in after} == {503}
    fast = sorted(seconds for seconds, _ in after)
    assert fast[len(fast) // 2] < 0.5, after  # most at once (one probe per retry window)
    assert max(fast) < BOUND_S + 1.5, after
    proxy.forward()
    wait_for(lambda: _timed_get(url)[1] == 200, BOUND_S + 5, "the database back")


def test_cached_credentials_serve_runs_through_a_short_outage_and_usage_follows(
    gateway: GatewayProcess, pg_proxy: tuple[FaultProxy, str], postgres_url: str
) -> None:
    """The credential cache's TTL is 0.25 s here: the runs during the outage are served from
    entries past it (stale-if-error), and their usage is written once the database is back."""
    proxy, _ = pg_proxy
    headers = seed(gateway.url)
    run(gateway.url, headers, "warm-up")
    proxy.cut()
    during = []
    deadline = time.monotonic() + 3  # many TTLs
    while time.monotonic() < deadline:
        during.append(run(gateway.url, headers, "during the outage"))
    assert len(during) >= 3
    # Usage needs the database: kept, not lost.
    proxy.forward()
    wait_for(
        lambda: len(sql(postgres_url, "SELECT run_id FROM usage_records")) == len(during) + 1,
        15,
        "the usage of the outage's runs",
    )
    report = httpx.get(f"{gateway.url}/admin/usage?group_by=tenant", headers=ADMIN).json()
    assert report["totals"]["runs"] == len(during) + 1
