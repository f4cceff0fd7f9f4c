"""Helpers for limit tests: tenants with limits, a private redis-server, gateway processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unavailable
from tests.gateway.conftest import ADMIN, AGENT_SPEC, Gateway, Tenant, mock_llm_base_url
from tests.waiting import wait_until

__all__ = ["mock_llm_base_url", "wait_until"]

# Small outputs keep reservations (estimated input + max_tokens) small and predictable.
LIMITED_AGENT: dict[str, Any] = {**AGENT_SPEC, "model_settings": {"max_tokens": 20}}


async def limited_tenant(gateway: Gateway, slug: str, **limits: int | None) -> Tenant:
    """A tenant with an agent (max_tokens 20) and the given limits."""
    tenant = await gateway.create_tenant(slug, agent=LIMITED_AGENT)
    if limits:
        r = await gateway.client.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
    return tenant


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private `redis-server` (no persistence) that a test may stop and restart."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "binary not found")
        assert binary is not None  # `unavailable` skips or fails
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_timeout=0.2).ping())
            except redis.RedisError:
                return False

        assert wait_until(up, timeout=5), "redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class GatewayProcess:
    """`uvicorn --factory gateway.app:create_app` as a separate OS process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "gateway.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
