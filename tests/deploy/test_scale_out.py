"""Scale-out on one machine: three `gateway serve` replicas behind a real nginx (the shipped
deploy/nginx/gateway.conf) on loopback, sharing PostgreSQL and Redis.

Through the balancer: request limits and the concurrency cap hold exactly across replicas; a
replica SIGTERMed under load costs no request; a replica SIGKILLed costs only the requests it
was serving, its concurrency leases hold their slots until their TTL and then free them, and
the other clients see no error; the usage records equal the 200s.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy import nginx
from tests.deploy.replicas import (
    Replica,
    in_flight,
    replica_env,
    seed_tenant,
    sse_events,
    usage_records,
    wait_for,
)
from tests.observability.live import free_port

LEASE_TTL_S = 12.0
"""Short, so that the dead replica's leases expire within the test (renewed every TTL/3)."""


@pytest.fixture
def cluster(
    postgres_url: str,
    mock_llm_base_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> Iterator[tuple[str, list[Replica]]]:
    """nginx's URL and the three replicas behind it."""
    env = replica_env(
        postgres_url,
        mock_llm_base_url,
        redis_url,
        redis_prefix,
        GATEWAY_DRAIN_DELAY_S="1",
        GATEWAY_SHUTDOWN_GRACE_S="20",
        GATEWAY_LIMITS_LEASE_TTL_S=str(LEASE_TTL_S),
    )
    replicas = [Replica(env, tmp_path / f"replica{i}.log") for i in range(3)]
    proc = None
    try:
        for replica in replicas:
            replica.wait_ready()
        port = free_port()
        conf = nginx.render(tmp_path / "nginx", port, [r.port for r in replicas])
        checked = nginx.check(conf)
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [nginx.nginx_binary(), "-p", str(conf.parent), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(url + "/readyz") == 200, "nginx to answer")
        yield url, replicas
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        for replica in replicas:
            replica.stop()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


class Client:
    """Runs through the balancer, keeping every outcome."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=100),
        )
        self.outcomes: list[int] = []

    async def run(self, text: str) -> int:
        r = await self.http.post("/v1/agents/assistant/runs", json={"input": text})
        self.outcomes.append(r.status_code)
        return r.status_code

    async def stream(self, text: str) -> int:
        """A streamed run: 200 only when it ended with `run.completed`."""
        r = await self.http.post("/v1/agents/assistant/runs", json={"input": text, "stream": True})
        status = r.status_code
        if status == 200 and sse_events(r.text)[-1][0] != "run.completed":
            status = -1
        self.outcomes.append(status)
        return status

    async def many(self, text: str, n: int) -> Counter[int]:
        return Counter(await asyncio.gather(*(self.run(text) for _ in range(n))))

    async def close(self) -> None:
        await self.http.aclose()


def served_by(replica: Replica, slug: str) -> int:
    """Requests of `slug` in a replica's access log."""
    return replica.log().count(f'"tenant":"{slug}"')


async def test_three_replicas_behind_nginx(cluster: tuple[str, list[Replica]]) -> None:
    url, replicas = cluster
    tag = secrets.token_hex(3)
    clients: dict[str, tuple[dict[str, str], Client]] = {}

    def tenant(name: str, limits: dict[str, Any] | None = None) -> Client:
        seeded = seed_tenant(url, f"{name}-{tag}", limits)
        client = Client(url, seeded["key"])
        clients[name] = (seeded, client)
        return client

    try:
        # Request limit: 10 per minute for the tenant, 25 at once spread over the replicas.
        rpm = tenant("rpm", {"requests_per_minute": 10})
        assert await rpm.many("Hello", 25) == Counter({200: 10, 429: 15})
        assert all(served_by(r, f"rpm-{tag}") > 0 for r in replicas), "nginx spread them"

        # Concurrency cap: 4 runs at once for the tenant, 12 long ones at once.
        cap = tenant("cap", {"max_concurrent_runs": 4})
        assert await cap.many("Hello [[latency:3000]]", 12) == Counter({200: 4, 429: 8})

        # SIGTERM under load: plain runs and streams go on through the balancer; none fails.
        steady = tenant("steady")
        stop = asyncio.Event()

        async def load(stream: bool) -> None:
            while not stop.is_set():
                if stream:
                    await steady.stream("Tell me [[latency:300]]")
                else:
                    await steady.run("Hello [[latency:200]]")

        workers = [asyncio.create_task(load(stream=i % 3 == 0)) for i in range(6)]
        await asyncio.to_thread(
            wait_for, lambda: served_by(replicas[0], f"steady-{tag}") >= 3, "load on replica 0"
        )
        replicas[0].signal(signal.SIGTERM)
        assert await asyncio.to_thread(replicas[0].wait_exit) == 0
        after = len(steady.outcomes)
        await asyncio.to_thread(
            wait_for, lambda: len(steady.outcomes) >= after + 12, "load after the exit"
        )
        stop.set()
        await asyncio.gather(*workers)
        errors = (Path(replicas[0].log_path).parent / "nginx" / "error.log").read_text()
        lost = [line for line in errors.splitlines() if "while reading response" in line]
        assert Counter(steady.outcomes) == Counter({200: len(steady.outcomes)}), lost

        # SIGKILL: the long runs in flight on the killed replica fail, nobody else's.
        killed = tenant("killed", {"max_concurrent_runs": 8})
        long_runs = [asyncio.create_task(killed.run("Hello [[latency:2500]]")) for _ in range(6)]
        victim, survivor = replicas[1], replicas[2]
        slug = f"killed-{tag}"
        await asyncio.to_thread(
            wait_for,
            lambda: in_flight(victim.url, slug) + in_flight(survivor.url, slug) == 6,
            "six long runs in flight",
        )
        lost = int(in_flight(victim.url, slug))
        assert 0 < lost < 6, "nginx spread the long runs over both replicas"
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        # Once it is gone its port refuses connections (a request that reached its socket
        # before was one it was serving, and is lost with it).
        assert await asyncio.to_thread(victim.wait_exit) == -signal.SIGKILL
        others = tenant("others")
        assert await others.many("Hello", 20) == Counter({200: 20})
        outcomes = Counter(await asyncio.gather(*long_runs))
        assert outcomes[200] == 6 - lost
        assert sum(n for status, n in outcomes.items() if status >= 500) == lost
        # Until their TTL the dead replica's leases hold their slots; then they are free.
        # A lease expires TTL after its last renewal (at most TTL/3 before the kill).
        assert time.monotonic() - killed_at < LEASE_TTL_S * 2 / 3 - 1, "too slow to see it"
        held = await killed.many("Hi [[latency:1500]]", 8)
        assert held == Counter({200: 8 - lost, 429: lost})
        await asyncio.sleep(max(0.0, killed_at + LEASE_TTL_S + 1 - time.monotonic()))
        assert await killed.many("Hi [[latency:1500]]", 10) == Counter({200: 8, 429: 2})
    finally:
        for _, client in clients.values():
            await client.close()

    # Every 200 has its usage record (none for the 429s and the runs killed mid-flight).
    for name, (seeded, client) in clients.items():
        ok = client.outcomes.count(200)
        wait_for(
            lambda s=seeded, n=ok: len(usage_records(survivor.url, s["id"])) >= n,
            f"{name}'s usage records",
        )
        records = usage_records(survivor.url, seeded["id"])
        assert Counter(r["status"] for r in records) == Counter({"completed": ok}), name
