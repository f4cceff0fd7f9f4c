"""docs/reliability.md cannot drift from the tests: every scenario row names a test that
exists, and every test of the fault suite has a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
NODE = re.compile(r"`([\w/]+\.py)?::(\w+)(?:\[[^\]]*\])?`")
"""`tests/x/test_y.py::name`, `test_y.py::name` (in tests/faults/) or `::name` (same file)."""


def table_rows() -> list[str]:
    """The rows of the scenario table (the table whose header has a `Test` column)."""
    rows, inside = [], False
    for line in DOC.read_text().splitlines():
        if line.startswith("|") and "| Test |" in line:
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not set(line) <= set("|- "):
            rows.append(line)
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def row_nodes(row: str) -> list[tuple[str, str]]:
    """(file relative to the repository, test name) of each node id in a row's last column."""
    nodes, current = [], ""
    for file, name in NODE.findall(row.rsplit("|", 2)[-2]):
        if file:
            current = file if file.startswith("tests/") else f"tests/faults/{file}"
        nodes.append((current, name))
    return nodes


def test_every_scenario_row_names_an_existing_test() -> None:
    rows = table_rows()
    assert len(rows) >= 10
    missing = []
    for row in rows:
        nodes = row_nodes(row)
        assert nodes and nodes[0][0], f"row names no test node id in its last column: {row}"
        for file, name in nodes:
            path = ROOT / file
            if not path.is_file() or name not in _test_names(path):
                missing.append(f"{file}::{name}")
    assert missing == []


def test_every_fault_suite_test_has_a_row() -> None:
    named = {f"{file}::{name}" for row in table_rows() for file, name in row_nodes(row)}
    suite = {
        f"{path.relative_to(ROOT)}::{name}"
        for path in sorted((ROOT / "tests" / "faults").glob("test_*.py"))
        if path.name != Path(__file__).name
        for name in _test_names(path)
    }
    assert sorted(suite - named) == []
