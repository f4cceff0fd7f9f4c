"""What several commands share: the host/port options and the one way to fail."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)]


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
