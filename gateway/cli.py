"""The `gateway` command: serve, migrate, run the mock LLM, seed the demo, manage tenants.

The operator commands (`tenants create`, `keys issue`, `agents put`) talk to the database
directly through the control plane's services, for operators without curl.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gateway.core.config import Settings, get_settings

app = typer.Typer(help="Agent Gateway: a multi-tenant gateway for OpenAI Agents SDK agents.")
db_app = typer.Typer(help="Database migrations.")
tenants_app = typer.Typer(help="Tenants.")
keys_app = typer.Typer(help="API keys.")
agents_app = typer.Typer(help="Agent specs.")
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(agents_app, name="agents")
admin_app = typer.Typer(help="Admin users (log in at POST /admin/login).")
app.add_typer(admin_app, name="admin")
secrets_app = typer.Typer(help="GATEWAY_SECRET_KEY rotation (docs/operations.md).")
app.add_typer(secrets_app, name="secrets")
prices_app = typer.Typer(help="Model prices (USD per million tokens).")
app.add_typer(prices_app, name="prices")

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(help="TCP port.")]


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to GATEWAY_DATABASE_URL."""
    from gateway.core.migrate import upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("wait")
def db_wait(
    timeout: Annotated[float, typer.Option(help="Give up (exit 1) after this many seconds.")] = 300,
) -> None:
    """Wait until GATEWAY_DATABASE_URL is migrated to this release's head (a replica's
    init step: it starts serving only after the release's `gateway db upgrade` ran)."""
    from gateway.core.migrate import head_revision, wait_for_head

    url = get_settings().database_url
    if not asyncio.run(wait_for_head(url, timeout)):
        _fail(f"the database is not at revision {head_revision()} after {timeout:g} s")
    typer.echo(f"database at {head_revision()}")


@app.command("mock-llm")
def mock_llm(
    host: Host = "127.0.0.1",
    port: Port = 9100,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
    stream_delay_ms: Annotated[float, typer.Option(help="Delay between stream chunks.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests that fail.")] = 0.0,
    fault_status: Annotated[int, typer.Option(help="Status of injected faults.")] = 500,
) -> None:
    """Serve the offline, deterministic OpenAI-compatible mock LLM."""
    from gateway.mock_llm import MockConfig, run_mock_server

    config = MockConfig(
        latency_ms=latency_ms,
        stream_delay_ms=stream_delay_ms,
        fault_rate=fault_rate,
        fault_status=fault_status,
    )
    run_mock_server(host, port, config)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.", envvar="GATEWAY_HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", envvar="PORT")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (about one per core).",
            envvar=["GATEWAY_WORKERS", "WEB_CONCURRENCY"],
            min=1,
        ),
    ] = 1,
    mock_port: Annotated[int, typer.Option(help="Port of the dev mock LLM.")] = 9100,
) -> None:
    """Serve the gateway (development without OPENAI_API_KEY: starts the mock LLM too)."""
    settings = get_settings()
    mock = _ensure_upstream(settings, mock_port)
    _ensure_dev_admin_token(settings)
    try:
        _run_uvicorn(host, port, workers)
    finally:
        if mock is not None:
            mock.terminate()


@app.command()
def demo(host: Host = "127.0.0.1", port: Port = 8000, mock_port: Port = 9100) -> None:
    """`make run`: migrate, seed the demo tenant, start the mock LLM and the gateway."""
    settings = get_settings()
    from gateway.core.migrate import upgrade

    upgrade(settings.database_url)
    token = _ensure_dev_admin_token(settings)
    key = asyncio.run(_seed_demo(settings))
    mock = _ensure_upstream(settings, mock_port)
    base = f"http://{host}:{port}"
    typer.echo(
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
    try:
        _run_uvicorn(host, port, 1)
    finally:
        if mock is not None:
            mock.terminate()


def _run_uvicorn(host: str, port: int, workers: int) -> None:
    from gateway.serving.run import serve

    status = serve(get_settings(), host, port, workers)
    if status != 0:
        raise typer.Exit(status)


def _ensure_dev_admin_token(settings: Settings) -> str:
    """Development without GATEWAY_ADMIN_TOKEN: make one for this process tree."""
    if settings.admin_token:
        return settings.admin_token
    token = "dev-" + secrets.token_urlsafe(24)
    os.environ["GATEWAY_ADMIN_TOKEN"] = token
    get_settings.cache_clear()
    return token


def _ensure_upstream(settings: Settings, mock_port: int) -> subprocess.Popen[bytes] | None:
    """No upstream key in development: run the built-in mock LLM and point the gateway at it."""
    if not settings.uses_mock_upstream or settings.openai_base_url:
        return None
    if settings.env != "development":
        _fail("set OPENAI_API_KEY and/or OPENAI_BASE_URL (the mock LLM is for development only)")
    proc = subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
        [
            *(sys.executable, "-m", "gateway.mock_llm", "--port", str(mock_port)),
            *("--parent-pid", str(os.getpid())),  # it exits with us, even on SIGTERM/SIGKILL
        ]
    )
    base_url = f"http://127.0.0.1:{mock_port}/v1"
    _wait_http(f"http://127.0.0.1:{mock_port}/healthz", proc)
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "mock-key")
    get_settings.cache_clear()
    return proc


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _fail(f"mock LLM exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback URL we built)
                return
        except OSError:
            time.sleep(0.1)
    _fail("mock LLM did not start")


DEMO_AGENT: dict[str, Any] = {
    "description": "A helpful assistant with a calculator and a clock.",
    "instructions": "You are a concise, helpful assistant. Use your tools when they help.",
    "model": "gpt-4.1-mini",
    "tools": ["calculator", "current_time"],
    "max_turns": 6,
}


async def _seed_demo(settings: Settings) -> str:
    """Create the `demo` tenant, its `assistant` agent and a key (idempotent)."""
    from gateway.core.db import Database
    from tenants.agent.service import put_agent
    from tenants.agent.spec import AgentSpec
    from tenants.api_key.schemas import KeyCreate
    from tenants.api_key.service import issue_key
    from tenants.tenant.repository import TenantRepository
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import create_tenant

    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            tenant = await TenantRepository(session).get_by_slug("demo")
            if tenant is None:
                tenant = await create_tenant(session, TenantCreate(slug="demo", name="Demo app"))
                await put_agent(session, tenant.id, "assistant", AgentSpec(**DEMO_AGENT))
            wanted = settings.demo_api_key
            if wanted:
                from tenants.api_key.keys import hash_key
                from tenants.api_key.repository import ApiKeyRepository

                existing = await ApiKeyRepository(session).get_with_tenant_by_hash(
                    hash_key(wanted, settings.secret_key)
                )
                if existing is None:
                    await issue_key(
                        session, settings, tenant.id, KeyCreate(name="demo"), plaintext=wanted
                    )
                await session.commit()
                return wanted
            # The plaintext of an earlier key cannot be recovered: every start issues a fresh one,
            # so the printed curl line always works.
            _, plaintext = await issue_key(session, settings, tenant.id, KeyCreate(name="demo"))
            await session.commit()
            return plaintext
    finally:
        await db.dispose()


def _with_session(fn: Any) -> Any:
    """Run `fn(session)` and turn the gateway's errors into a clear message and exit 1."""
    from pydantic import ValidationError

    from gateway.core.db import Database
    from gateway.core.errors import GatewayError

    async def go() -> Any:
        db = Database(get_settings().database_url)
        try:
            async with db.session() as session:
                return await fn(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        typer.echo(f"error: {exc.errors()[0]['msg']} ({exc.errors()[0]['loc']})", err=True)
        raise typer.Exit(1) from None


async def _audit(
    session: Any,
    action: str,
    target_type: str,
    target_id: str,
    tenant_id: str | None,
    details: dict[str, Any],
) -> None:
    """The audit event of an operator command (actor `cli`), as the admin API writes it."""
    from tenants.audit.service import record_event

    await record_event(
        session,
        actor="cli",
        action=action,
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        details=details,
    )


async def _tenant_id(session: Any, ref: str) -> str:
    from gateway.core.errors import NotFoundError
    from tenants.tenant.repository import TenantRepository

    repo = TenantRepository(session)
    tenant = await repo.get_by_slug(ref) if not ref.startswith("ten_") else await repo.get(ref)
    if tenant is None:
        raise NotFoundError(f"no tenant {ref!r}")
    return tenant.id


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[str, typer.Option(help="Unique, immutable: [a-z0-9-]{2,40}.")],
    name: Annotated[str, typer.Option(help="Display name.")],
) -> None:
    """Create a tenant and print it as JSON."""
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import create_tenant

    async def go(session: Any) -> Any:
        tenant = await create_tenant(session, TenantCreate(slug=slug, name=name))
        await _audit(session, "tenant.create", "tenant", tenant.id, tenant.id, {"slug": slug})
        return tenant

    tenant = _with_session(go)
    typer.echo(json.dumps({"id": tenant.id, "slug": tenant.slug, "name": tenant.name}))


@keys_app.command("issue")
def keys_issue(
    tenant: Annotated[str, typer.Option(help="Tenant id or slug.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
) -> None:
    """Issue an API key; the plaintext is printed once."""
    from tenants.api_key.schemas import KeyCreate
    from tenants.api_key.service import issue_key

    settings = get_settings()

    async def go(session: Any) -> Any:
        tenant_id = await _tenant_id(session, tenant)
        row, plaintext = await issue_key(session, settings, tenant_id, KeyCreate(name=name))
        await _audit(
            session,
            "key.create",
            "api_key",
            row.id,
            tenant_id,
            {"name": name, "scopes": row.scopes},
        )
        return row, plaintext

    row, plaintext = _with_session(go)
    typer.echo(json.dumps({"id": row.id, "key": plaintext}))


@agents_app.command("put")
def agents_put(
    tenant: Annotated[str, typer.Option(help="Tenant id or slug.")],
    name: Annotated[str, typer.Option(help="Agent name: [a-z0-9_-]{1,64}.")],
    file: Annotated[Path, typer.Option(help="JSON agent spec (SPEC §9).")],
) -> None:
    """Create an agent or a new version of it from a JSON spec file."""
    from gateway.core.errors import ValidationFailedError
    from tenants.agent.service import put_agent
    from tenants.agent.spec import AGENT_NAME_RE, AgentSpec

    async def go(session: Any) -> Any:
        if not AGENT_NAME_RE.match(name):
            raise ValidationFailedError("agent names are [a-z0-9_-]{1,64}")
        spec = AgentSpec.model_validate_json(file.read_text())
        tenant_id = await _tenant_id(session, tenant)
        agent, version, created = await put_agent(session, tenant_id, name, spec)
        action = "agent.create" if created else "agent.put"
        await _audit(session, action, "agent", name, tenant_id, {"version": version.version})
        return agent, version, created

    agent, version, _ = _with_session(go)
    typer.echo(json.dumps({"id": agent.id, "name": agent.name, "version": version.version}))


@secrets_app.command("re-encrypt")
def secrets_reencrypt() -> None:
    """Re-encrypt every stored secret under the current GATEWAY_SECRET_KEY (after a rotation,
    with the old key in GATEWAY_SECRET_KEY_OLD); prints the counts; audited."""
    from tenants.audit.service import record_event
    from tenants.rotation import reencrypt_all

    settings = get_settings()

    async def go(session: Any) -> Any:
        counts = await reencrypt_all(session, settings)
        await record_event(
            session,
            actor="cli",
            action="secrets.reencrypt",
            target_type="secrets",
            target_id=None,
            details=counts,
        )
        return counts

    typer.echo(json.dumps(_with_session(go)))


@admin_app.command("create-user")
def admin_create_user(
    username: Annotated[str, typer.Argument(help="2-64 characters of a-z, 0-9, _ . -")],
    role: Annotated[str, typer.Option(help="admin (everything) or viewer (GET only).")],
    password: Annotated[
        str | None, typer.Option(help="At least 12 characters; prompted for when absent.")
    ] = None,
) -> None:
    """Create an admin user (password hashed with Argon2; audited as `user.create`)."""
    from tenants.admin.users import create_user

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    secret: str = password

    async def go(session: Any) -> Any:
        return await create_user(session, username, role, secret, actor="cli")

    user = _with_session(go)
    typer.echo(json.dumps({"id": user.id, "username": user.username, "role": user.role}))


@admin_app.command("set-role")
def admin_set_role(
    username: Annotated[str, typer.Argument(help="The admin user.")],
    role: Annotated[str, typer.Option(help="admin (everything) or viewer (GET only).")],
) -> None:
    """Change a user's role; it applies to their tokens from their next request (audited)."""
    from tenants.admin.users import set_role

    async def go(session: Any) -> Any:
        return await set_role(session, username, role, actor="cli")

    user = _with_session(go)
    typer.echo(json.dumps({"id": user.id, "username": user.username, "role": user.role}))


@admin_app.command("delete-user")
def admin_delete_user(
    username: Annotated[str, typer.Argument(help="The admin user.")],
) -> None:
    """Delete a user; their admin JWTs are refused from their next request (audited)."""
    from tenants.admin.users import delete_user

    async def go(session: Any) -> Any:
        return await delete_user(session, username, actor="cli")

    user = _with_session(go)
    typer.echo(json.dumps({"id": user.id, "username": user.username, "deleted": True}))


PerMtokOption = Annotated[str, typer.Option(help="USD per million tokens, e.g. 0.40.")]


@prices_app.command("set")
def prices_set(
    model: Annotated[str, typer.Argument(help="The model name agents use.")],
    input_per_mtok: Annotated[str, typer.Option("--input", help="USD per million input tokens.")],
    output_per_mtok: Annotated[
        str, typer.Option("--output", help="USD per million output tokens.")
    ],
    cached_input_per_mtok: Annotated[
        str | None,
        typer.Option(
            "--cached-input", help="USD per million cached input tokens (default: input)."
        ),
    ] = None,
    reasoning_per_mtok: Annotated[
        str | None,
        typer.Option("--reasoning", help="USD per million reasoning tokens (default: output)."),
    ] = None,
    effective_at: Annotated[
        str | None, typer.Option(help="RFC 3339 time from which it applies (default: now).")
    ] = None,
) -> None:
    """Set a model's price from now (or `--effective-at`) on; audited as `price.put`."""
    from tenants.price.schemas import PricePut, price_public
    from tenants.price.service import put_price

    body = {
        "input_per_mtok": input_per_mtok,
        "output_per_mtok": output_per_mtok,
        "cached_input_per_mtok": cached_input_per_mtok,
        "reasoning_per_mtok": reasoning_per_mtok,
        "effective_at": effective_at,
    }

    async def go(session: Any) -> Any:
        row = await put_price(session, model, PricePut.model_validate(body))
        public = price_public(row)
        details = public.model_dump(exclude={"model", "priced", "created_at"})
        await _audit(session, "price.put", "model_price", model, None, details)
        return public

    public = _with_session(go)
    typer.echo(public.model_dump_json())


def main() -> None:
    app()
