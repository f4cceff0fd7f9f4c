"""`gateway demo` (what `make run` starts): migrate, seed the demo tenant, serve.

The seed is idempotent: the `demo` tenant and its `assistant` agent are created once; a key is
issued on every start (`GATEWAY_DEMO_API_KEY` pins it) so the printed curl line always works.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import typer

from gateway.cli.options import Host, Port, fail
from gateway.cli.serve import (
    ensure_dev_admin_token,
    ensure_upstream,
    require_free_port,
    run_uvicorn,
    uses_mock,
)
from gateway.core.allocator import apply_allocator
from gateway.core.config import Settings, SettingsError, get_settings


def demo(host: Host = "127.0.0.1", port: Port = 8000, mock_port: Port = 9100) -> None:
    """`make run`: migrate, seed the demo tenant, start the mock LLM and the gateway."""
    # The demo's HTTP tool is served on loopback (by the mock LLM): let the egress guard allow it.
    os.environ.setdefault("GATEWAY_EGRESS_ALLOW", "127.0.0.0/8")
    get_settings.cache_clear()
    settings = get_settings()
    check_demo_key(settings.demo_api_key)
    from tenants.tenant.service import check_default_tenant_limits

    check_default_tenant_limits(settings)  # the demo tenant takes them, before anything starts
    apply_allocator(settings)  # may re-execute this command under jemalloc
    # Both ports first: a taken one would otherwise be found after the banner was printed
    # (the gateway's), or not at all (the mock's: the other server would answer in its place).
    require_free_port(host, port, "the gateway's")
    mocked = uses_mock(settings)
    if mocked:
        require_free_port("127.0.0.1", mock_port, "the mock LLM's")
    from gateway.core.migrate import upgrade

    upgrade(settings.database_url)
    token = ensure_dev_admin_token(settings)
    # The demo's signed HTTP tool is served by the mock: without it, the agent goes without.
    key, tool_secret = asyncio.run(seed_demo(settings, mock_port if mocked else None))
    mock = ensure_upstream(settings, mock_port, tool_secret)
    base = f"http://{host}:{port}"
    banner = (
        "\nAgent Gateway demo\n"
        f"  gateway:     {base}  (docs: {base}/docs)\n"
        f"  upstream:    {os.environ.get('OPENAI_BASE_URL') or 'OpenAI'}\n"
        f"  admin token: {token}\n"
        f"  demo key:    {key}\n\n"
        "Try:\n"
        f"  curl -s {base}/v1/agents/assistant/runs -H 'Authorization: Bearer "
        f"{key}' -H 'Content-Type: application/json' "
        '-d \'{"input": "What is 12*7? Use the calculator."}\'\n'
    )
    if mocked:
        banner += (
            "A signed HTTP tool call (served by the mock LLM, which checks the signature):\n"
            f"  curl -s {base}/v1/agents/assistant/runs -H 'Authorization: Bearer "
            f"{key}' -H 'Content-Type: application/json' "
            '-d \'{"input": "Use lookup_order for {\\"order_id\\": \\"A-17\\"}"}\'\n'
        )
    typer.echo(banner)
    try:
        run_uvicorn(host, port, 1)
    finally:
        if mock is not None:
            mock.terminate()


def check_demo_key(key: str | None) -> None:
    """A pinned demo key must be a gateway key (one line and exit 2 otherwise, as any bad
    setting), checked before anything is migrated or started."""
    from tenants.api_key.keys import is_well_formed

    if key and not is_well_formed(key):
        raise SettingsError(
            "invalid settings: GATEWAY_DEMO_API_KEY: not a gateway key (gw_ + 32 base62 "
            "characters + a 6-character CRC32 checksum; leave it unset for a fresh one)"
        )


DEMO_AGENT: dict[str, Any] = {
    "description": "A helpful assistant with a calculator and a clock.",
    "instructions": "You are a concise, helpful assistant. Use your tools when they help.",
    "model": "gpt-4.1-mini",
    "tools": ["calculator", "current_time"],
    "max_turns": 6,
}


def demo_agent(mock_port: int | None) -> dict[str, Any]:
    """The demo agent: the built-in tools and, with the mock LLM on `mock_port`, a signed
    HTTP tool it serves."""
    if mock_port is None:
        return dict(DEMO_AGENT)
    lookup = {
        "type": "http",
        "name": "lookup_order",
        "description": "Look up an order by its id.",
        "url": f"http://127.0.0.1:{mock_port}/_mock/tools/lookup_order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
        "timeout_s": 5,
    }
    return {**DEMO_AGENT, "tools": [*DEMO_AGENT["tools"], lookup]}


DEMO_TOOL_URL = re.compile(r"http://127\.0\.0\.1:\d+/_mock/tools/lookup_order")


def moved_demo_tool(spec: dict[str, Any], mock_port: int | None) -> dict[str, Any] | None:
    """The stored demo agent's spec with its mock-served `lookup_order` tool pointed at this
    start's mock (or dropped when no mock runs), or None when nothing needs to change. A
    database seeded by an earlier start on another `--mock-port` would otherwise call a port
    nobody (or something else) listens on. Only the tool the demo itself made is touched."""
    wanted = None if mock_port is None else demo_agent(mock_port)["tools"][-1]
    tools: list[Any] = []
    changed = False
    for tool in spec.get("tools", []):
        ours = (
            isinstance(tool, dict)
            and tool.get("name") == "lookup_order"
            and DEMO_TOOL_URL.fullmatch(str(tool.get("url", "")))
        )
        if ours and (wanted is None or tool["url"] != wanted["url"]):
            changed = True
            if wanted is not None:
                tools.append({**tool, "url": wanted["url"]})
            continue
        tools.append(tool)
    return {**spec, "tools": tools} if changed else None


def _usable_demo_key(key: Any, tenant_id: str) -> bool:
    """Whether a pinned demo key makes the printed curl lines work."""
    from gateway.core.clock import as_utc, utcnow

    expired = key.expires_at is not None and as_utc(key.expires_at) <= utcnow()
    return (
        key.tenant_id == tenant_id
        and key.revoked_at is None
        and not expired
        and "runs" in (key.scopes or ["runs"])
    )


async def seed_demo(settings: Settings, mock_port: int | None = 9100) -> tuple[str, str]:
    """Create the `demo` tenant, its `assistant` agent and a key (idempotent); rotate its
    tool-signing secret (a plaintext cannot be recovered later). Returns (key, secret)."""
    from gateway.core.db import Database
    from tenants.agent.repository import AgentRepository
    from tenants.agent.service import put_agent
    from tenants.agent.spec import AgentSpec
    from tenants.api_key.schemas import KeyCreate
    from tenants.api_key.service import issue_key
    from tenants.tenant.repository import TenantRepository
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import create_tenant
    from tenants.tool_secret.service import rotate

    db = Database(settings.database_url)
    try:
        async with db.unit() as session:  # committed as a whole when the block returns
            tenant = await TenantRepository(session).get_by_slug("demo")
            if tenant is not None and tenant.deleted_at is not None:
                fail(
                    "the demo tenant was deleted from this database, and a slug is never used "
                    "again: start on a fresh database (delete ./gateway.db, or point "
                    "GATEWAY_DATABASE_URL at a new file)"
                )
            if tenant is not None and tenant.status != "active":
                fail(
                    f"the demo tenant is {tenant.status}: make it active again (PATCH "
                    f'/admin/tenants/{tenant.id} with {{"status": "active"}}) or start on a '
                    "fresh database"
                )
            if tenant is None:
                tenant = await create_tenant(
                    session,
                    TenantCreate(slug="demo", name="Demo app"),
                    settings.default_tenant_limits,
                )
                await put_agent(session, tenant.id, "assistant", AgentSpec(**demo_agent(mock_port)))
            else:
                active = await AgentRepository(session).get_active(tenant.id, "assistant")
                if active is None:  # deleted since: the printed curl lines run it
                    spec = demo_agent(mock_port)
                    await put_agent(session, tenant.id, "assistant", AgentSpec(**spec))
                moved = None if active is None else moved_demo_tool(active[1].spec, mock_port)
                if moved is not None:
                    await put_agent(session, tenant.id, "assistant", AgentSpec(**moved))
            _, tool_secret, _ = await rotate(session, settings.secret_key, tenant.id)
            wanted = settings.demo_api_key
            if wanted:
                from tenants.api_key.keys import hash_key
                from tenants.api_key.repository import ApiKeyRepository

                existing = await ApiKeyRepository(session).get_with_tenant_by_hash(
                    hash_key(wanted, settings.secret_key)
                )
                if existing is not None and not _usable_demo_key(existing[0], tenant.id):
                    raise SettingsError(
                        "invalid settings: GATEWAY_DEMO_API_KEY: that key was revoked, has "
                        "expired, lacks the runs scope or belongs to another tenant; unset it "
                        "for a fresh one, or pin another"
                    )
                if existing is None:
                    await issue_key(
                        session, settings, tenant.id, KeyCreate(name="demo"), plaintext=wanted
                    )
                return wanted, tool_secret
            # The plaintext of an earlier key cannot be recovered: every start issues a fresh one,
            # so the printed curl line always works.
            _, plaintext = await issue_key(session, settings, tenant.id, KeyCreate(name="demo"))
            return plaintext, tool_secret
    finally:
        await db.dispose()
