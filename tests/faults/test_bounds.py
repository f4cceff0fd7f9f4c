"""Bounded everything: a run's overall deadline (504 `run_timeout`, `run.failed` when
streaming), the documented bound of one model call with its retries, a slow SSE reader, and
the in-process quota store's memory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from gateway.limits.memory import MemoryQuotaStore
from gateway.limits.policy import QuotaLimits
from tests.gateway.conftest import ADMIN, gateway_for
from tests.observability.live import serve_gateway

pytestmark = pytest.mark.faults

RUN = "/v1/agents/assistant/runs"


def in_flight(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("gateway_runs_in_flight{")
    )


async def test_a_run_past_its_deadline_is_504_run_timeout(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, run_timeout_s=1.0, upstream_timeout_s=30
    ):
        tenant = await gw.create_tenant("deadline")
        started = time.monotonic()
        r = await gw.client.post(RUN, json={"input": "hi [[latency:5000]]"}, headers=tenant.headers)
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_timeout", "run_timeout")
        assert "1 seconds" in error["message"]
        assert 0.9 < elapsed < 3.0, elapsed

        started = time.monotonic()
        body = {"input": "hi again [[latency:5000]]", "stream": True}
        r = await gw.client.post(RUN, json=body, headers=tenant.headers)
        assert r.status_code == 200
        events = [block for block in r.text.split("\n\n") if block.startswith("event: ")]
        assert [e.split("\n")[0] for e in events] == ["event: run.created", "event: run.failed"]
        failed = json.loads(events[-1].split("data: ", 1)[1])
        assert failed["error"]["code"] == "run_timeout"
        assert time.monotonic() - started < 3.0

        await gw.flush_usage()
        r = await gw.client.get(f"/admin/tenants/{tenant.id}/usage", headers=ADMIN)
        assert r.json()["totals"]["runs"] == 2
        metrics = await gw.client.get("/metrics")
        assert in_flight(metrics.text) == 0


async def test_a_timed_out_model_call_with_retries_stays_within_the_documented_bound(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    """(1 + retries) attempts of `upstream_timeout_s` plus the client's backoff (0.5 s, then
    1 s, each jittered down by up to a quarter)."""
    timeout_s, retries = 0.3, 2
    async for gw in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        upstream_timeout_s=timeout_s,
        upstream_max_retries=retries,
        upstream_api="chat_completions",
    ):
        tenant = await gw.create_tenant("retried")
        started = time.monotonic()
        r = await gw.client.post(
            RUN, json={"input": "slow [[fault:timeout]]"}, headers=tenant.headers
        )
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
        attempts = (1 + retries) * timeout_s
        assert attempts + 0.75 * 1.5 * 0.9 < elapsed < attempts + 1.5 + 1.0, elapsed


def test_a_slow_sse_reader_gets_every_event(
    tmp_path: Path, sqlite_template: Path, mock_llm_base_url: str
) -> None:
    """The producer waits for a client that does not read (bounded queue) instead of
    buffering; once the client reads, nothing is lost and the run completes."""
    db = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, db)
    with serve_gateway(tmp_path, f"sqlite+aiosqlite:///{db}", mock_llm_base_url, workers=1) as live:
        tenant = live.create_tenant("slowreader")
        words = [f"w{i}" for i in range(3000)]
        body = {"input": " ".join(words), "stream": True}
        deltas: list[str] = []
        with live.client() as c, c.stream("POST", RUN, json=body, headers=tenant.headers) as r:
            assert r.status_code == 200
            time.sleep(2)  # a client busy elsewhere: the gateway must hold, not drop
            last = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    last = line
                elif line.startswith("data: ") and last == "event: output_text.delta":
                    deltas.append(json.loads(line[6:])["delta"])
        assert last == "event: run.completed"
        assert "".join(deltas).split()[-len(words) :] == words


async def test_the_memory_quota_store_forgets_idle_tenants() -> None:
    store = MemoryQuotaStore(lease_ttl_s=60)
    concurrency = QuotaLimits.of({"max_concurrent_runs": 5})
    tokens = QuotaLimits.of({"tokens_per_day": 10_000})
    for i in range(1000):
        await store.admit(f"ten_{i}", f"run_{i}", concurrency)
        await store.release(f"ten_{i}", f"run_{i}")
    await store.admit("ten_busy", "run_busy", concurrency)  # still holds its lease
    await store.admit("ten_spent", "run_spent", tokens, "res_1", 100)  # tokens counted today
    assert len(store) == 1002
    store.sweep()
    assert len(store) == 2, "only the tenants with something left to count"
    assert store.open_counts("ten_busy") == (1, 0)
    assert (await store.peek("ten_spent")).tpd_used == 100
