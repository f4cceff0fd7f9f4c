"""`make run` as a newcomer uses it: the demo starts, prints a key, and its curl line works."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer

from tests.conftest import wait_answering

GATEWAY = str(Path(sys.executable).parent / "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_the_seeded_assistant(tmp_path: Path) -> None:
    # Twice on one database, the second time on other ports (the README's way around a taken
    # port): the seeded agent's signed tool follows the mock to its new port.
    for _ in range(2):
        serve_the_demo_and_use_it(tmp_path)


def serve_the_demo_and_use_it(tmp_path: Path) -> None:
    port, mock_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GATEWAY_"))}
    env.update(
        GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [GATEWAY, "demo", "--port", str(port), "--mock-port", str(mock_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_answering(f"{base}/healthz", proc, log)
        text = log.read_text()
        key = re.search(r"demo key:\s+(gw_\w+)", text)
        token = re.search(r"admin token:\s+(\S+)", text)
        assert key and token, text
        r = httpx.post(
            f"{base}/v1/agents/assistant/runs",
            json={"input": "What is 12*7? Use the calculator."},
            headers={"Authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert "84" in r.json()["output"]
        # The signed HTTP tool: the printed curl line's input, served by the mock LLM, which
        # checks the signature with the tenant's secret.
        line = next(line for line in text.splitlines() if "lookup_order" in line)
        body = line.split("-d '", 1)[1].rstrip("'")
        r = httpx.post(
            f"{base}/v1/agents/assistant/runs",
            content=body,
            headers={"Authorization": f"Bearer {key.group(1)}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        output = r.json()["output"]
        assert '"signature_verified":true' in output.replace(" ", ""), output
        assert "A-17" in output
        r = httpx.get(
            f"{base}/admin/tenants", headers={"Authorization": f"Bearer {token.group(1)}"}
        )
        assert [t["slug"] for t in r.json()["data"]] == ["demo"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def test_a_malformed_pinned_demo_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GATEWAY_DEMO_API_KEY": "my-demo-key",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
    }
    done = subprocess.run(
        [GATEWAY, "demo", "--port", str(free_port()), "--mock-port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = (done.stderr + done.stdout).strip().splitlines()
    assert len(lines) == 1 and "GATEWAY_DEMO_API_KEY" in lines[0], lines
    assert "my-demo-key" not in lines[0]  # a setting's value is never echoed
    assert "Traceback" not in done.stderr


def test_a_taken_port_stops_the_demo_before_it_prints_or_serves(tmp_path: Path) -> None:
    # The gateway's port taken: exit 1 before the banner (its curl lines would reach the
    # other server). The mock's taken: the same, not a gateway served by whatever holds it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GATEWAY_"))}
    env["GATEWAY_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for ports, what in (
            ((busy, free_port()), "the gateway's port"),
            ((free_port(), busy), "the mock LLM's port"),
        ):
            done = subprocess.run(
                [GATEWAY, "demo", "--port", str(ports[0]), "--mock-port", str(ports[1])],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 1, (what, done.stdout, done.stderr)
            assert f"error: {what} {busy} on 127.0.0.1 is not free" in done.stderr, done.stderr
            assert "demo key" not in done.stdout and "Traceback" not in done.stderr


def test_with_a_real_upstream_the_demo_offers_no_mock_served_tool(tmp_path: Path) -> None:
    # OPENAI_BASE_URL set: no mock is started, so the agent goes without the tool the mock
    # serves, and the banner does not print its curl line.
    from gateway.cli.demo import demo_agent

    assert [t for t in demo_agent(None)["tools"] if not isinstance(t, str)] == []
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GATEWAY_"))}
    env.update(
        GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        OPENAI_API_KEY="sk-test",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [GATEWAY, "demo", "--port", str(port), "--mock-port", str(free_port())],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_answering(f"{base}/healthz", proc, log)
        text = log.read_text()
        token = re.search(r"admin token:\s+(\S+)", text)
        assert token and "lookup_order" not in text, text
        admin = {"Authorization": f"Bearer {token.group(1)}"}
        tenant = httpx.get(f"{base}/admin/tenants", headers=admin).json()["data"][0]["id"]
        agent = httpx.get(f"{base}/admin/tenants/{tenant}/agents/assistant", headers=admin)
        assert agent.json()["spec"]["tools"] == ["calculator", "current_time"], agent.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def test_a_restart_restores_the_demo_agent_and_refuses_a_revoked_pinned_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make run` again after the demo was changed by hand: a deleted `assistant` is made
    again (the printed curl lines run it), and a pinned `GATEWAY_DEMO_API_KEY` that was
    revoked is one line naming it, not a banner printing a key that answers 401."""
    from gateway.cli.demo import seed_demo
    from gateway.core.config import Settings, SettingsError
    from gateway.core.db import Database
    from gateway.core.migrate import upgrade
    from tenants.agent.repository import AgentRepository
    from tenants.agent.service import delete_agent
    from tenants.api_key.service import revoke_key
    from tenants.tenant.repository import TenantRepository

    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    settings = Settings(database_url=url, demo_api_key=None)
    key, _ = asyncio.run(seed_demo(settings, 18999))

    async def change_by_hand(revoke: bool) -> bool:
        db = Database(url)
        try:
            async with db.unit() as session:
                tenant = await TenantRepository(session).get_by_slug("demo")
                assert tenant is not None
                if revoke:
                    from tenants.api_key.keys import hash_key
                    from tenants.api_key.repository import ApiKeyRepository

                    found = await ApiKeyRepository(session).get_with_tenant_by_hash(
                        hash_key(key, settings.secret_key)
                    )
                    assert found is not None
                    await revoke_key(session, tenant.id, found[0].id)
                else:
                    await delete_agent(session, tenant.id, "assistant")
                active = await AgentRepository(session).get_active(tenant.id, "assistant")
                return active is not None
        finally:
            await db.dispose()

    assert asyncio.run(change_by_hand(revoke=False)) is False
    asyncio.run(seed_demo(settings, 18999))
    assert asyncio.run(change_by_hand(revoke=True)) is True  # the restart made it again
    pinned = Settings(database_url=url, demo_api_key=key)
    with pytest.raises(SettingsError, match="GATEWAY_DEMO_API_KEY: that key was revoked"):
        asyncio.run(seed_demo(pinned, 18999))

    async def suspend() -> None:
        db = Database(url)
        try:
            async with db.unit() as session:
                tenant = await TenantRepository(session).get_by_slug("demo")
                assert tenant is not None
                tenant.status = "suspended"
                session.add(tenant)
        finally:
            await db.dispose()

    # A suspended demo tenant: one line saying so, not a banner whose curl lines answer 403.
    asyncio.run(suspend())
    with pytest.raises(typer.Exit):
        asyncio.run(seed_demo(settings, 18999))
    assert "the demo tenant is suspended" in capsys.readouterr().err
