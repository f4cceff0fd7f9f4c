"""`gateway serve --workers 2`: scraped counters are the sum over workers; JSON access logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.observability.live import LiveGateway, LiveTenant, parse_metrics, serve_gateway, total

METRICS_TOKEN = "metrics-token-0123456789"
RUNS_PATH = "/v1/agents/assistant/runs"
RUNS_ROUTE = "/v1/agents/{name}/runs"


def _run(gw: LiveGateway, tenant: LiveTenant, i: int) -> httpx.Response:
    # A fresh connection per request lets the kernel hand requests to either worker.
    with gw.client() as c:
        return c.post(
            RUNS_PATH,
            json={"input": f"hello worker test {i}", "stream": i % 4 == 0},
            headers={**tenant.headers, "X-Request-ID": f"mw-{i}"},
        )


def _run_pids(gw: LiveGateway) -> set[int]:
    return {
        line["pid"]
        for line in gw.log_lines()
        if line.get("logger") == "gateway.access" and line.get("route") == RUNS_ROUTE
    }


def test_two_workers_sum_counters_and_log_json(
    tmp_path: Path, sqlite_url: str, mock_llm_base_url: str
) -> None:
    with serve_gateway(
        tmp_path, sqlite_url, mock_llm_base_url, GATEWAY_METRICS_TOKEN=METRICS_TOKEN
    ) as gw:
        instance_dirs = list(gw.metrics_dir.iterdir())
        assert len(instance_dirs) == 1, "one multiprocess directory per instance"
        tenant = gw.create_tenant("multiworker")
        sent = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(8) as pool:
            # Known traffic, in batches until both workers have served runs.
            while sent < 16 or len(_run_pids(gw)) < 2:
                assert time.monotonic() < deadline, "runs never reached both workers"
                for r in pool.map(lambda i: _run(gw, tenant, i), range(sent, sent + 8)):
                    assert r.status_code == 200, r.text
                sent += 8
        gw.wait_for_usage_runs(tenant, sent)
        usage = gw.usage_totals(tenant)["totals"]

        with gw.client() as c:
            assert c.get("/metrics").status_code == 401
            assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            # Any worker answers the scrape with the sum over both.
            scrapes = [
                parse_metrics(
                    c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
                )
                for _ in range(4)
            ]
    labels = {"tenant": "multiworker", "agent": "assistant"}
    for metrics in scrapes:
        assert total(metrics, "gateway_runs_total", status="completed", **labels) == sent
        assert total(metrics, "gateway_run_duration_seconds_count", **labels) == sent
        assert (
            total(metrics, "gateway_tokens_total", type="input", **labels) == usage["input_tokens"]
        )
        assert (
            total(metrics, "gateway_tokens_total", type="output", **labels)
            == usage["output_tokens"]
        )
        assert total(metrics, "gateway_model_calls_total", **labels) == usage["requests"]
        assert (
            total(metrics, "http_requests_total", handler="/v1/agents/{name}/runs", status="200")
            == sent
        )
        assert total(metrics, "gateway_time_to_first_token_seconds_count", **labels) == len(
            range(0, sent, 4)
        )
        assert total(metrics, "gateway_runs_in_flight", tenant="multiworker") == 0
        workers = [k for k in metrics if k[0] == "gateway_worker_start_time_seconds"]
        assert len(workers) == 2, workers

    # One JSON access line per run request, with the request's id, tenant, agent and tokens.
    access = [
        line
        for line in gw.log_lines()
        if line.get("logger") == "gateway.access" and line.get("route") == RUNS_ROUTE
    ]
    assert sorted(line["request_id"] for line in access) == sorted(f"mw-{i}" for i in range(sent))
    for line in access:
        assert line["status"] == 200 and line["method"] == "POST"
        assert line["tenant"] == "multiworker" and line["agent"] == "assistant"
        assert line["latency_ms"] > 0
    assert sum(line["tokens"] for line in access) == usage["input_tokens"] + usage["output_tokens"]
    log_text = gw.log_path.read_text()
    assert tenant.key not in log_text and METRICS_TOKEN not in log_text
    assert "hello worker test" not in log_text  # no prompt text by default
    assert '"uvicorn.access"' not in log_text
    # The instance's directory is removed when the gateway stops.
    assert not any(gw.metrics_dir.iterdir())


def _workers(supervisor: int) -> list[int]:
    """The worker processes of a `gateway serve` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = []
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if b"resource_tracker" not in command:
            workers.append(int(pid))
    return workers


def test_a_killed_workers_runs_leave_the_in_flight_gauge(
    tmp_path: Path, sqlite_url: str, mock_llm_base_url: str
) -> None:
    # A worker SIGKILLed with runs in flight never marks itself dead: the supervisor does,
    # when it restarts it, so its runs do not stay in flight (nor its start time listed)
    # on every dashboard for good.
    import os
    import signal

    with serve_gateway(tmp_path, sqlite_url, mock_llm_base_url) as gw:
        tenant = gw.create_tenant("killed")
        first = _workers(gw.pid)
        assert len(first) == 2, first

        def slow(i: int) -> int:
            with gw.client() as c:
                try:
                    return c.post(
                        RUNS_PATH,
                        json={"input": f"slow {i} [[latency:4000]]"},
                        headers=tenant.headers,
                    ).status_code
                except httpx.HTTPError:
                    return 0  # served by the killed worker

        with ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(slow, i) for i in range(6)]
            deadline = time.monotonic() + 20
            while True:  # both workers have runs in flight
                with gw.client() as c:
                    metrics = parse_metrics(c.get("/metrics").text)
                if total(metrics, "gateway_runs_in_flight", tenant="killed") == 6:
                    break
                assert time.monotonic() < deadline, "the runs never got in flight"
                time.sleep(0.1)
            for pid in first:  # every run in flight was on a killed worker
                os.kill(pid, signal.SIGKILL)
            codes = [future.result() for future in pending]
        assert codes == [0] * 6, codes
        deadline = time.monotonic() + 30
        while True:
            workers = _workers(gw.pid)
            try:
                with gw.client() as c:
                    metrics = parse_metrics(c.get("/metrics").text)
            except httpx.HTTPError:
                metrics = {}  # the new workers are starting
            listed = [k for k in metrics if k[0] == "gateway_worker_start_time_seconds"]
            if len(workers) == 2 and not set(first) & set(workers) and len(listed) == 2:
                break
            assert time.monotonic() < deadline, (workers, listed)
            time.sleep(0.2)
        assert total(metrics, "gateway_runs_in_flight", tenant="killed") == 0
        assert {dict(labels)["pid"] for _, labels in listed} == {str(pid) for pid in workers}


def test_a_starting_worker_never_shows_a_start_time_of_zero(tmp_path: Path) -> None:
    """The series exists from the moment the metrics module is imported (multiprocess mode
    writes it at 0 there): it must already hold the start time, or a worker still starting
    (a respawn after a crash) shows 1970 to `time() - gateway_worker_start_time_seconds`."""
    read = (
        "import observability.metrics\n"
        "from prometheus_client import CollectorRegistry, multiprocess\n"
        "registry = CollectorRegistry()\n"
        "multiprocess.MultiProcessCollector(registry)\n"
        "for family in registry.collect():\n"
        "    if family.name == 'gateway_worker_start_time_seconds':\n"
        "        print(*[sample.value for sample in family.samples])\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    before = time.time()
    done = subprocess.run(
        [sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [value] = [float(v) for v in done.stdout.split()]
    assert before - 1 <= value <= time.time() + 1, value
