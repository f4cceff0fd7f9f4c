"""The `gateway` Typer app: every command group mounted in one place."""

from __future__ import annotations

import sys

import typer

from gateway.cli import demo, operators, serve
from gateway.core.config import SettingsError

app = typer.Typer(help="Agent Gateway: a multi-tenant gateway for OpenAI Agents SDK agents.")
app.command()(serve.serve)
app.command("mock-llm")(serve.mock_llm)
app.command()(demo.demo)
app.add_typer(operators.db_app, name="db")
app.add_typer(operators.tenants_app, name="tenants")
app.add_typer(operators.keys_app, name="keys")
app.add_typer(operators.agents_app, name="agents")
app.add_typer(operators.admin_app, name="admin")
app.add_typer(operators.secrets_app, name="secrets")
app.add_typer(operators.prices_app, name="prices")
app.add_typer(operators.usage_app, name="usage")


def main() -> None:
    try:
        app()
    except SettingsError as exc:  # one line naming the setting, never a traceback or a value
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
