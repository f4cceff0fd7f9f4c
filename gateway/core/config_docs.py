"""The configuration reference (docs/configuration.md), generated from `Settings`.

Every setting's variable, default, allowed values and meaning come from the `Settings` field
and its attribute docstring, so the page cannot drift from the code: `make docs-config`
rewrites it and `tests/test_docs.py` fails when the committed page differs.

    python -m gateway.core.config_docs > docs/configuration.md
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from gateway.core.config import Settings

HEADER = """\
# Configuration

<!-- Generated from gateway/core/config.py by `make docs-config`: edit the docstrings there. -->

The gateway reads its settings once, at start-up, from environment variables (no `.env` file
is read). Every variable but the two standard OpenAI ones has the prefix `GATEWAY_`. Outside
`GATEWAY_ENV=development`, placeholder secrets are refused at start-up.

| Variable | Default | Values | Meaning |
|---|---|---|---|
"""

FOOTER = """
`gateway serve` also reads `GATEWAY_HOST` (interface, default `127.0.0.1`), `PORT` (default
`8000`) and `GATEWAY_WORKERS` or `WEB_CONCURRENCY` (worker processes, default 1) for its
command-line options, so a container can be configured by environment alone.
`PROMETHEUS_MULTIPROC_DIR` is set by `gateway serve --workers N` itself (see
[Observability](observability.md)); do not set it by hand.
"""


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable(s) of a field: its aliases, else `GATEWAY_<NAME>`."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return " or ".join(f"`{choice}`" for choice in alias.choices)
    return f"`GATEWAY_{name.upper()}`"


PLACEHOLDER_DEFAULTS = frozenset({"secret_key"})
"""Settings whose default is a development placeholder (not printed: it must be replaced)."""


def default(name: str, field: FieldInfo) -> str:
    """The default as a reader sets it (`unset` for None, booleans in lower case)."""
    value = field.get_default(call_default_factory=True)  # a factory's value, not its marker
    if name in PLACEHOLDER_DEFAULTS:
        return "a development placeholder"
    if value == {}:
        return "unset"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def values(field: FieldInfo) -> str:
    """Allowed values: the choices of a `Literal`, else the numeric and length bounds."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    bounds: list[str] = []
    for item in field.metadata:
        bounds.extend(_bound(item))
    return ", ".join(bounds)


def _bound(item: Any) -> list[str]:
    if isinstance(item, Ge):
        return [f"≥ {item.ge}"]
    if isinstance(item, Gt):
        return [f"> {item.gt}"]
    if isinstance(item, Le):
        return [f"≤ {item.le}"]
    if isinstance(item, Lt):
        return [f"< {item.lt}"]
    if isinstance(item, MinLen):
        return [f"at least {item.min_length} characters"]
    if isinstance(item, MaxLen):
        return [f"at most {item.max_length} characters"]
    return []


def meaning(field: FieldInfo) -> str:
    """The attribute docstring, on one line (paragraphs kept apart), `|` escaped."""
    text = field.description or ""
    paragraphs = [" ".join(part.split()) for part in text.split("\n\n")]
    return "<br><br>".join(paragraphs).replace("|", "\\|")


def render() -> str:
    """The whole configuration page."""
    rows = [
        f"| {variable(name, field)} | {default(name, field)} | {values(field)} | {meaning(field)} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n" + FOOTER


def undocumented() -> list[str]:
    """Settings without an attribute docstring (every setting must have one)."""
    return [name for name, field in Settings.model_fields.items() if not field.description]


if __name__ == "__main__":
    sys.stdout.write(render())
