"""Real gateway processes for the fault suite (`gateway serve`, stopped with real signals),
and the small helpers its tests share: direct SQL on the real database, seeding, runs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from gateway.core.db import Database
from tenants.models import UsageRecord
from tenants.usage.repository import UsageRepository
from tests.conftest import ADMIN_TOKEN, gateway_env, wait_answering
from tests.gateway.conftest import AGENT_SPEC
from tests.limits.conftest import free_port
from tests.waiting import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class GatewayProcess:
    """`gateway serve` on a free port with the test environment plus `env`."""

    def __init__(self, database_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        gateway_bin = Path(sys.executable).parent / "gateway"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(gateway_bin), "serve", "--port", str(self.port)],
                env=gateway_env(database_url, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            # Generous: a loaded CI machine (or a cold bytecode cache) starts slowly.
            wait_answering(f"{self.url}/healthz", self.proc, log, timeout_s=90)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> float:
        """Send `sig` and wait for the exit; returns the seconds it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            message = f"no exit {timeout_s} s after {sig.name}: {self.log()[-3000:]}"
            raise AssertionError(message) from None
        return time.monotonic() - started


def sql(url: str, statement: str) -> list[dict[str, Any]]:
    """Run one statement on the real database (directly, not through the proxy)."""

    async def run() -> list[dict[str, Any]]:
        db = Database(url)
        try:
            async with db.engine.begin() as conn:
                result = await conn.execute(text(statement))
                return [dict(row._mapping) for row in result] if result.returns_rows else []
        finally:
            await db.dispose()

    return asyncio.run(run())


def insert(url: str, record: UsageRecord) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            async with db.unit() as session:
                await UsageRepository(session).add_many([record])
        finally:
            await db.dispose()

    asyncio.run(run())


def seed(base_url: str) -> dict[str, str]:
    """A tenant with the `assistant` agent; its key's headers."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=10) as c:
        tenant = c.post("/admin/tenants", json={"slug": "acme", "name": "Acme"}).json()
        key = c.post(f"/admin/tenants/{tenant['id']}/keys", json={"name": "k"}).json()
        r = c.put(f"/admin/tenants/{tenant['id']}/agents/assistant", json=AGENT_SPEC)
        assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {key['key']}"}


def run(base_url: str, headers: dict[str, str], text_: str) -> str:
    r = httpx.post(
        f"{base_url}/v1/agents/assistant/runs", json={"input": text_}, headers=headers, timeout=30
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    """Wait for `predicate()` with a deadline (`tests.waiting.wait_until`), failing with `what`."""
    assert wait_until(predicate, timeout=timeout_s, interval=0.1), f"timed out waiting for {what}"
