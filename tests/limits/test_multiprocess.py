"""Two real gateway processes sharing one Redis and one database: limits hold exactly."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL, gateway_env, unavailable
from tests.gateway.conftest import ADMIN
from tests.limits.conftest import (
    LIMITED_AGENT,
    GatewayProcess,
    wait_until,
)

pytestmark = pytest.mark.redis  # the cluster reaches Redis by URL, not through a fixture


class Cluster:
    def __init__(self, procs: list[GatewayProcess], prefix: str) -> None:
        self.procs = procs
        self.prefix = prefix
        self.urls = [p.url for p in procs]

    async def tenant(self, slug: str, **limits: int) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.urls[0], headers=ADMIN, timeout=10) as c:
            r = await c.post("/admin/tenants", json={"slug": slug, "name": slug, "limits": limits})
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            r = await c.post(f"/admin/tenants/{tid}/keys", json={"name": "k"})
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            r = await c.put(f"/admin/tenants/{tid}/agents/assistant", json=LIMITED_AGENT)
            assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, mock_llm_base_url: str
) -> Iterator[Cluster]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", str(exc))
    tmp = tmp_path_factory.mktemp("cluster")
    db = tmp / "shared.db"
    db.write_bytes(sqlite_template.read_bytes())
    prefix = f"test:{secrets.token_hex(6)}:"
    env = gateway_env(
        f"sqlite+aiosqlite:///{db}",
        GATEWAY_REDIS_URL=REDIS_URL,
        GATEWAY_REDIS_KEY_PREFIX=prefix,
        OPENAI_BASE_URL=mock_llm_base_url,
        GATEWAY_UPSTREAM_MAX_RETRIES="0",
        GATEWAY_LIMITS_LEASE_TTL_S="30",
        GATEWAY_UPSTREAM_API="chat_completions",
    )
    procs = [GatewayProcess(env, tmp / f"gw{i}.log") for i in range(2)]
    try:
        if not all(wait_until(p.ready, timeout=30, interval=0.2) for p in procs):
            logs = [(tmp / f"gw{i}.log").read_text() for i in range(2)]
            pytest.fail(f"gateway processes did not start: {logs}")
        yield Cluster(procs, prefix)
    finally:
        for p in procs:
            p.stop()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


async def _burst(cluster: Cluster, headers: dict[str, str], n: int) -> list[httpx.Response]:
    clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=20) for u in cluster.urls]
    try:
        return await asyncio.gather(*(clients[i % 2].get("/v1/agents") for i in range(n)))
    finally:
        for c in clients:
            await c.aclose()


async def test_exactly_l_admitted_over_two_processes(cluster: Cluster) -> None:
    for round_ in range(4):
        headers = await cluster.tenant(f"exact-{round_}", requests_per_minute=10)
        responses = await _burst(cluster, headers, 40)
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 10, codes
        assert codes.count(429) == 30, codes
        for r in responses:
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "requests_per_minute"
                assert r.headers["x-ratelimit-remaining-requests"] == "0"


async def test_tenant_a_flooding_gives_tenant_b_no_429(cluster: Cluster) -> None:
    a = await cluster.tenant("flood-a", requests_per_minute=5)
    b = await cluster.tenant("calm-b", requests_per_minute=1000)
    flood, calm = await asyncio.gather(_burst(cluster, a, 80), _burst(cluster, b, 40))
    assert [r.status_code for r in flood].count(429) == 75
    assert [r.status_code for r in calm] == [200] * 40


async def _run(url: str, headers: dict[str, str], text: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
        return await c.post("/v1/agents/assistant/runs", json={"input": text})


async def _in_flight(cluster: Cluster, headers: dict[str, str]) -> int:
    async with httpx.AsyncClient(base_url=cluster.urls[1], headers=headers, timeout=5) as c:
        r = await c.get("/v1/limits")
        window: dict[str, Any] = r.json()["windows"]["max_concurrent_runs"]
        return int(window["used"])


async def _until_free(cluster: Cluster, headers: dict[str, str], timeout: float = 3) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await _in_flight(cluster, headers) != 0:
        assert asyncio.get_running_loop().time() < deadline, "lease not released"
        await asyncio.sleep(0.05)


async def test_concurrency_cap_across_processes_and_slots_come_back(cluster: Cluster) -> None:
    headers = await cluster.tenant("capped", max_concurrent_runs=2)
    slow = "hello [[latency:1500]]"
    results = await asyncio.gather(*(_run(cluster.urls[i % 2], headers, slow) for i in range(6)))
    codes = [r.status_code for r in results]
    assert codes.count(200) == 2, codes
    assert codes.count(429) == 4, codes
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["error"]["code"] == "concurrent_runs"
    assert int(refused.headers["retry-after"]) >= 1
    # after success: the slots are free again, at once (not after the 30 s lease TTL)
    assert await _in_flight(cluster, headers) == 0
    # after an upstream error
    failed = await asyncio.gather(*(_run(u, headers, "x [[fault:500]]") for u in cluster.urls))
    assert [r.status_code for r in failed] == [502, 502]
    await _until_free(cluster, headers)
    # after a client disconnect mid-stream: the model call already sent is read to its end
    # (1 s: the upstream bills it), then the slot comes back
    for url in cluster.urls:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as c:
            body = {"input": "bye [[latency:1000]]", "stream": True}
            async with c.stream("POST", "/v1/agents/assistant/runs", json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("event: run.created"):
                        break
    await _until_free(cluster, headers, timeout=1 + 4)
    again = await asyncio.gather(*(_run(u, headers, slow) for u in cluster.urls))
    assert [r.status_code for r in again] == [200, 200]
