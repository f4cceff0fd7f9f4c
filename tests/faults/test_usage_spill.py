"""Usage records that cannot reach the database by shutdown survive it: spilled to a local
file, replayed at the next start, each counted exactly once (real processes, a real
PostgreSQL behind a proxy that is cut, SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from gateway.usage.codec import record_from_json
from tests.conftest import _truncate
from tests.faults.processes import ADMIN, GatewayProcess, insert, run, seed, sql, wait_for
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.faults


def assert_replayed_once(
    postgres_url: str, tmp_path: Path, url: str, run_ids: list[str], timeout_s: float
) -> None:
    """Every one of `run_ids` is stored exactly once, in the rows and in the usage report,
    once the replay is done (its file gone: nothing more can arrive)."""
    wait_for(
        lambda: len(sql(postgres_url, "SELECT run_id FROM usage_records")) >= len(run_ids),
        timeout_s,
        "the replay",
    )
    wait_for(lambda: not list(tmp_path.glob("spill.ndjson*")), 10, "the replayed file to go")
    rows = sql(postgres_url, "SELECT run_id, count(*) AS n FROM usage_records GROUP BY run_id")
    assert sorted(row["run_id"] for row in rows) == sorted(run_ids)
    assert all(row["n"] == 1 for row in rows)
    report = httpx.get(f"{url}/admin/usage?group_by=tenant", headers=ADMIN).json()
    assert report["totals"]["runs"] == len(run_ids)


def test_shutdown_during_an_outage_spills_and_the_next_start_replays_exactly_once(
    postgres_url: str,
    pg_proxy: tuple[FaultProxy, str],
    mock_llm_base_url: str,
    tmp_path: Path,
) -> None:
    asyncio.run(_truncate(postgres_url))
    proxy, proxied_url = pg_proxy
    spill = tmp_path / "spill.ndjson"
    env = {
        "OPENAI_BASE_URL": mock_llm_base_url,
        "GATEWAY_UPSTREAM_API": "chat_completions",
        "GATEWAY_USAGE_SPILL_PATH": str(spill),
        "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "1",
        # Long enough to serve the outage's runs from the credential and agent caches.
        "GATEWAY_PRINCIPAL_CACHE_TTL_S": "5",
    }
    gateway = GatewayProcess(proxied_url, tmp_path / "first.log", **env)
    try:
        headers = seed(gateway.url)
        before = [run(gateway.url, headers, f"before {i}") for i in range(3)]
        wait_for(
            lambda: len(sql(postgres_url, "SELECT run_id FROM usage_records")) == 3,
            10,
            "the first records",
        )
        proxy.cut()
        during = [run(gateway.url, headers, f"during {i}") for i in range(5)]
    finally:
        gateway.stop(signal.SIGTERM)
    log = gateway.log()
    assert "5 usage records spilled" in log, log[-3000:]
    lines = spill.read_text().splitlines()
    assert sorted(json.loads(line)["run_id"] for line in lines) == sorted(during)

    # One spilled record was in fact written (its commit's answer lost in the outage): the
    # replay must not count it twice.
    insert(postgres_url, record_from_json(lines[0]))
    proxy.forward()
    restarted = GatewayProcess(proxied_url, tmp_path / "second.log", **env)
    try:
        assert_replayed_once(postgres_url, tmp_path, restarted.url, before + during, 15)
    finally:
        restarted.stop(signal.SIGTERM)
    assert "replayed 5 usage records" in restarted.log()


def test_a_killed_process_loses_no_usage_record_its_journal_is_replayed_exactly_once(
    postgres_url: str, mock_llm_base_url: str, tmp_path: Path
) -> None:
    """SIGKILL runs no shutdown: the records of runs answered since the last flush were only
    in memory. The journal beside the spill file keeps them; a living replica of the same
    host adopts the dead one's journal (a second gateway process sharing the spill path,
    started while the first still runs, so it cannot take a living process's journal), and
    each run is counted once, also one that had reached the database before the kill."""
    asyncio.run(_truncate(postgres_url))
    spill = tmp_path / "spill.ndjson"
    env = {
        "OPENAI_BASE_URL": mock_llm_base_url,
        "GATEWAY_UPSTREAM_API": "chat_completions",
        "GATEWAY_USAGE_SPILL_PATH": str(spill),
    }
    # No flush of its own before the kill: every record is only in memory and the journal.
    victim = GatewayProcess(
        postgres_url, tmp_path / "victim.log", GATEWAY_USAGE_FLUSH_INTERVAL_S="3600", **env
    )
    survivor: GatewayProcess | None = None
    try:
        headers = seed(victim.url)
        answered = [run(victim.url, headers, f"answered {i}") for i in range(6)]
        survivor = GatewayProcess(postgres_url, tmp_path / "survivor.log", **env)
        time.sleep(1.0)  # the survivor's first adoption pass: the victim is alive, so none
        assert sql(postgres_url, "SELECT run_id FROM usage_records") == []
        assert len(list(tmp_path.glob("spill.ndjson.journal-*"))) == 1
        # One record did reach the database before the kill: it must not count twice.
        (segment,) = tmp_path.glob("spill.ndjson.journal-*")
        insert(postgres_url, record_from_json(segment.read_text().splitlines()[0]))
        victim.stop(signal.SIGKILL)
        # The survivor adopts the dead process's journal (within 5 s) and replays it.
        assert_replayed_once(postgres_url, tmp_path, survivor.url, answered, 20)
    finally:
        victim.stop(signal.SIGKILL)
        if survivor is not None:
            survivor.stop(signal.SIGTERM)
    assert "replayed 6 usage records" in survivor.log()
