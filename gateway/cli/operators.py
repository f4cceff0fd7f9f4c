"""Operator commands: `gateway db`, `tenants`, `keys`, `agents`, `admin`, `secrets`, `prices`,
`usage`.

They talk to the database directly through the control plane's services (for operators
without curl) and write the same audit events as the admin API, with the actor `cli`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.options import fail
from gateway.core.config import get_settings

db_app = typer.Typer(help="Database migrations.")
tenants_app = typer.Typer(help="Tenants.")
keys_app = typer.Typer(help="API keys.")
agents_app = typer.Typer(help="Agent specs.")
admin_app = typer.Typer(help="Admin users (log in at POST /admin/login).")
secrets_app = typer.Typer(help="GATEWAY_SECRET_KEY rotation (docs/operations.md).")
prices_app = typer.Typer(help="Model prices (USD per million tokens).")
usage_app = typer.Typer(help="Usage records: partitions and retention.")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations to GATEWAY_DATABASE_URL (up to `--revision`; never down)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.core.migrate import current_revision, upgrade

    url = get_settings().database_url
    try:
        upgrade(url, revision)
        current = asyncio.run(current_revision(url))
    except CommandError as exc:  # an unknown revision, say
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        fail(database_problem(exc))
    relative = revision in ("head", "heads") or revision.startswith(("+", "-"))
    if not relative and current != revision:
        fail(f"the database is at revision {current}, past {revision}: upgrade never goes back")
    typer.echo(f"database at {current}")


@db_app.command("wait")
def db_wait(
    timeout: Annotated[float, typer.Option(help="Give up (exit 1) after this many seconds.")] = 300,
) -> None:
    """Wait until GATEWAY_DATABASE_URL is migrated to this release's head (a replica's
    init step: it starts serving only after the release's `gateway db upgrade` ran)."""
    from gateway.core.migrate import head_revision, wait_for_head

    url = get_settings().database_url
    found = asyncio.run(wait_for_head(url, timeout))
    if found is not None:
        fail(f"the database is not at revision {head_revision()} after {timeout:g} s ({found})")
    typer.echo(f"database at {head_revision()}")


def _with_session(fn: Any) -> Any:
    """Run `fn(session)` in one unit of work (committed if it succeeds, rolled back if it
    raises) and turn the gateway's errors into a clear message and exit 1."""
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.core.db import Database
    from gateway.core.errors import GatewayError

    async def go() -> Any:
        db = Database(get_settings().database_url)
        try:
            async with db.unit() as session:
                return await fn(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except (SQLAlchemyError, OSError) as exc:
        typer.echo(f"error: {database_problem(exc)}", err=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        typer.echo(f"error: {validation_problem(exc)}", err=True)
        raise typer.Exit(1) from None


def validation_problem(exc: Any) -> str:
    """A pydantic ValidationError's first error as one line: `field.path: message`."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {message}" if where else message


def database_problem(exc: BaseException) -> str:
    """One line for a database the command could not use: the driver's own first line (never
    the URL, which may hold a password, nor the SQL), and the fix when tables are missing."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    hint = ""
    if "no such table" in first or ("relation" in first and "does not exist" in first):
        hint = " (the schema is missing: run `gateway db upgrade` first)"
    elif "no such column" in first or ("column" in first and "does not exist" in first):
        hint = " (the schema is older than this release: run `gateway db upgrade` first)"
    return f"the database cannot be used: {first}{hint}"


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
    slug: Annotated[str, typer.Option(help="Unique, immutable: 2-40 of a-z, 0-9 and -.")],
    name: Annotated[str, typer.Option(help="Display name.")],
) -> None:
    """Create a tenant and print it as JSON."""
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import check_default_tenant_limits, create_tenant

    check_default_tenant_limits(get_settings())  # one line naming the variable, before any work

    async def go(session: Any) -> Any:
        defaults = get_settings().default_tenant_limits
        tenant = await create_tenant(session, TenantCreate(slug=slug, name=name), defaults)
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
    name: Annotated[str, typer.Option(help="Agent name: 1-64 of a-z, 0-9, _ and -.")],
    file: Annotated[
        Path,
        typer.Option(
            help="JSON agent spec, as the admin API's agent PUT takes it.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
) -> None:
    """Create an agent or a new version of it from a JSON spec file."""
    from gateway.core.errors import ValidationFailedError
    from tenants.agent.checks import put_checked_agent
    from tenants.agent.spec import AGENT_NAME_RE, AgentSpec

    async def go(session: Any) -> Any:
        if not AGENT_NAME_RE.match(name):
            raise ValidationFailedError("agent names are [a-z0-9_-]{1,64}")
        spec = AgentSpec.model_validate_json(file.read_bytes())
        tenant_id = await _tenant_id(session, tenant)
        # The admin API's PUT path: egress, the tenant's upstreams and allowed models.
        agent, version, created = await put_checked_agent(
            session, get_settings(), tenant_id, name, spec
        )
        action = "agent.create" if created else "agent.put"
        await _audit(session, action, "agent", name, tenant_id, {"version": version.version})
        return agent, version, created

    agent, version, _ = _with_session(go)
    typer.echo(json.dumps({"id": agent.id, "name": agent.name, "version": version.version}))


@secrets_app.command("re-encrypt")
def secrets_reencrypt() -> None:
    """Re-encrypt every stored secret under the current GATEWAY_SECRET_KEY (after a rotation,
    with the old key in GATEWAY_SECRET_KEY_OLD); prints the counts; audited. Exits 1 when a
    secret is unreadable (under a key no longer configured)."""
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

    counts = _with_session(go)
    typer.echo(json.dumps(counts))
    if counts["unreadable"]:
        typer.echo(
            f"error: {counts['unreadable']} stored secret(s) cannot be read with the configured"
            " keys: put the key they were stored under in GATEWAY_SECRET_KEY_OLD and run this"
            " again",
            err=True,
        )
        raise typer.Exit(1)


@admin_app.command("create-user")
def admin_create_user(
    username: Annotated[str, typer.Argument(help="2-64 characters of a-z, 0-9, _ . -")],
    role: Annotated[str, typer.Option(help="admin (everything) or viewer (GET only).")],
    password: Annotated[
        str | None,
        typer.Option(help="At least 12 characters besides blanks; prompted for when absent."),
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
    from pydantic import TypeAdapter

    from tenants.price.schemas import ModelName, PricePut, price_public
    from tenants.price.service import put_price

    body = {
        "input_per_mtok": input_per_mtok,
        "output_per_mtok": output_per_mtok,
        "cached_input_per_mtok": cached_input_per_mtok,
        "reasoning_per_mtok": reasoning_per_mtok,
        "effective_at": effective_at,
    }

    async def go(session: Any) -> Any:
        checked = TypeAdapter(ModelName).validate_python(model)  # as the API's path takes it
        row = await put_price(session, checked, PricePut.model_validate(body))
        public = price_public(row)
        details = public.model_dump(exclude={"model", "priced", "created_at"})
        await _audit(session, "price.put", "model_price", model, None, details)
        return public

    public = _with_session(go)
    typer.echo(public.model_dump_json())


@usage_app.command("maintain")
def usage_maintain() -> None:
    """Create the coming months' partitions of the raw usage records and drop those past
    GATEWAY_USAGE_RAW_RETENTION_DAYS (PostgreSQL; run it daily from cron or a CronJob); a drop
    is audited as `usage.drop`."""
    from gateway.core.clock import utcnow
    from tenants.usage.partitions import is_partitioned, maintain

    settings = get_settings()

    async def go(session: Any) -> Any:
        if not is_partitioned(session):
            return None
        done = await maintain(
            session,
            today=utcnow().date(),
            months_ahead=settings.usage_partitions_ahead,
            retention_days=settings.usage_raw_retention_days,
        )
        if done.dropped:  # billing data gone: who, when, which months
            kept_from = None if done.kept_from is None else done.kept_from.isoformat()
            details = {"dropped": done.dropped, "kept_from": kept_from}
            await _audit(session, "usage.drop", "usage_records", "usage_records", None, details)
        return done

    done = _with_session(go)
    if done is None:
        typer.echo(json.dumps({"partitioned": False, "note": "SQLite: one table, no retention"}))
        return
    kept_from = None if done.kept_from is None else done.kept_from.isoformat()
    typer.echo(
        json.dumps(
            {
                "partitioned": True,
                "created": done.created,
                "dropped": done.dropped,
                "kept_from": kept_from,
            }
        )
    )
