"""A real `gateway serve --workers N` subprocess on loopback, seeded over the admin API."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN, SECRET_KEY, wait_answering
from tests.gateway.conftest import AGENT_SPEC

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveTenant:
    id: str
    slug: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class LiveGateway:
    base_url: str
    log_path: Path
    metrics_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    """The `gateway serve` process (with one worker: the process that serves)."""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)

    def create_tenant(self, slug: str, limits: dict[str, Any] | None = None) -> LiveTenant:
        with self.client() as c:
            body: dict[str, Any] = {"slug": slug, "name": slug}
            if limits:
                body["limits"] = limits
            r = c.post("/admin/tenants", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
            tenant_id = r.json()["id"]
            r = c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "t"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            r = c.put(
                f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC, headers=ADMIN
            )
            assert r.status_code == 201, r.text
        return LiveTenant(id=tenant_id, slug=slug, key=key)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def usage_totals(self, tenant: LiveTenant, group_by: str = "agent") -> dict[str, Any]:
        with self.client() as c:
            # The admin view of the usage API: not subject to the tenant's own rate limits.
            r = c.get(
                f"/admin/tenants/{tenant.id}/usage", params={"group_by": group_by}, headers=ADMIN
            )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_for_usage_runs(self, tenant: LiveTenant, runs: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.usage_totals(tenant)["totals"]["runs"]
            if seen >= runs:
                assert seen == runs
                return
            assert time.monotonic() < deadline, f"usage shows {seen} of {runs} runs"
            time.sleep(0.1)


@contextlib.contextmanager
def serve_gateway(
    tmp_path: Path, database_url: str, mock_url: str, *, workers: int = 2, **env: str
) -> Iterator[LiveGateway]:
    """Run `gateway serve --workers N`; stops it (SIGTERM) at the end."""
    port = free_port()
    metrics_base = tmp_path / "metrics"
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OPENAI_", "PROMETHEUS_", "prometheus_"))
    }
    clean.update(
        {
            "GATEWAY_ENV": "test",
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "GATEWAY_SECRET_KEY": SECRET_KEY,
            "GATEWAY_USAGE_FLUSH_INTERVAL_S": "0.05",
            "GATEWAY_PRINCIPAL_CACHE_TTL_S": "0.25",
            "GATEWAY_METRICS_DIR": str(metrics_base),
            "GATEWAY_USAGE_SPILL_PATH": str(tmp_path / "usage-spill.ndjson"),
            "OPENAI_API_KEY": "test-upstream-key",
            "OPENAI_BASE_URL": mock_url,
        }
    )
    clean.update(env)
    log_path = tmp_path / "gateway.log"
    gateway_bin = Path(sys.executable).parent / "gateway"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(gateway_bin), "serve", "--workers", str(workers), "--port", str(port)],
            env=clean,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base_url}/readyz", proc, log_path, timeout_s=60)
        yield LiveGateway(base_url, log_path, metrics_base, clean, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format -> {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return values


def total(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and wanted <= ls)
