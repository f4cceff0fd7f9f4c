"""Structure: only a unit of work commits (`gateway.core.db.Database.unit`, which `SessionDep`
and the background writers use). Services and repositories add and flush; a `commit()` in one
of them would split a request (or a change and its audit event) into two transactions."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMIT = re.compile(r"\.commit\s*\(")
LAYERS = (
    "tenants/*/service.py",
    "tenants/*/repository.py",
    "tenants/**/*.py",  # the whole control plane: the caller's unit commits for it
    "gateway/*/service.py",
    "gateway/*/repository.py",
    "gateway/runs/store.py",
)


def _files() -> list[Path]:
    return sorted({path for pattern in LAYERS for path in ROOT.glob(pattern)})


def test_the_layers_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in _files()}
    # The check must not pass for want of files.
    assert {
        "tenants/tenant/service.py",
        "tenants/audit/service.py",
        "tenants/usage/repository.py",
        "tenants/api_key/repository.py",
        "gateway/conversations/service.py",
    } <= names


def test_no_service_or_repository_commits() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if COMMIT.search(line.split("#", 1)[0])
    ]
    assert offenders == [], "commit only in a unit of work (Database.unit):\n" + "\n".join(
        offenders
    )
