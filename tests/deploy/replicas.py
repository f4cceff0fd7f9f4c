"""Real `gateway serve` processes on loopback for the drain and scale-out tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, gateway_env
from tests.gateway.conftest import AGENT_SPEC
from tests.observability.live import free_port
from tests.waiting import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GATEWAY = str(Path(sys.executable).parent / "gateway")


def wait_for(predicate: Any, what: str, timeout_s: float = 15.0) -> None:
    """`wait_until`, failing the test with `what` when the deadline passes."""
    assert wait_until(predicate, timeout=timeout_s, interval=0.02), f"timed out: {what}"


class Replica:
    """One `gateway serve` process (its log in `log_path`)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [GATEWAY, "serve", "--port", str(self.port), "--workers", str(workers)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 60) -> Replica:
        def ready() -> bool:
            assert self.proc.poll() is None, f"replica exited: {self.log()[-3000:]}"
            return self.status("/readyz") == 200

        wait_for(ready, f"{self.url} to be ready", timeout_s)
        return self

    def status(self, path: str) -> int | None:
        """The status of GET `path`, None when the connection is refused."""
        try:
            return httpx.get(self.url + path, timeout=2).status_code
        except httpx.TransportError:
            return None

    def signal(self, sig: signal.Signals) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def wait_exit(self, timeout_s: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"replica did not exit: {self.log()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def replica_env(
    database_url: str, mock_url: str, redis_url: str, prefix: str, **extra: str
) -> dict[str, str]:
    return gateway_env(
        database_url,
        OPENAI_BASE_URL=mock_url,
        GATEWAY_REDIS_URL=redis_url,
        GATEWAY_REDIS_KEY_PREFIX=prefix,
        GATEWAY_UPSTREAM_API="chat_completions",
        # Redis calls are time-boxed (100 ms by default); on a machine loaded by parallel test
        # runs a release could time out and leave its lease to the TTL, which these tests
        # would misread as a drain that leaked it.
        GATEWAY_REDIS_TIMEOUT_MS="1000",
        **extra,
    )


def seed_tenant(url: str, slug: str, limits: dict[str, Any] | None = None) -> dict[str, str]:
    """A tenant with the test agent and a key, over the admin API; its id and key."""
    with httpx.Client(base_url=url, timeout=30, headers=ADMIN) as client:
        body: dict[str, Any] = {"slug": slug, "name": slug}
        if limits:
            body["limits"] = limits
        r = client.post("/admin/tenants", json=body)
        assert r.status_code == 201, r.text
        tenant_id = r.json()["id"]
        r = client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "t"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        r = client.put(f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC)
        assert r.status_code == 201, r.text
    return {"id": tenant_id, "key": key}


def usage_runs(url: str, tenant_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30, headers=ADMIN) as client:
        r = client.get(f"/admin/tenants/{tenant_id}/usage", params={"group_by": "agent"})
        assert r.status_code == 200, r.text
        return dict(r.json()["totals"])


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) of an SSE body (comments skipped)."""
    events = []
    for block in text.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name is not None:
            events.append((name, data))
    return events


def usage_records(url: str, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's raw usage records (the billing export), in run-id order."""
    r = httpx.get(
        f"{url}/admin/usage/records",
        params={"tenant_id": tenant_id},
        headers={**ADMIN, "Accept": "application/x-ndjson"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def in_flight(url: str, slug: str) -> float:
    """`gateway_runs_in_flight` of a tenant on one replica (0 when absent)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.TransportError:
        return -1
    for line in text.splitlines():
        if line.startswith("gateway_runs_in_flight{") and f'tenant="{slug}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0
