"""Linear-time regular expressions for tenant patterns, and `jsonschema` made to use them.

A tenant writes regular expressions in three places the gateway evaluates: guardrail
patterns, and the `pattern` / `patternProperties` keywords of JSON Schemas (an HTTP tool's
`parameters`, an agent's `output_schema`, an MCP tool's output schema). The text they are
matched against comes from the model, so from whoever writes the prompt. Python's `re`
backtracks: `^(a+)+$` against 30 `a`s and a `!` takes minutes, holding the worker's event
loop (every other request of the replica waits). RE2 matches in time linear in the text.

`jsonschema` has no setting for its regular-expression engine (python-jsonschema#1142): its
keyword functions call the `re` module they import. `install` replaces that name, in the
modules that match instances against schema regexes, with `LINEAR`, whose `search` runs RE2.
A pattern RE2 cannot compile (lookarounds, backreferences) never matches: a value checked
against it fails validation rather than running a backtracking engine. The control plane
refuses such patterns at PUT (`check_pattern`), so only an MCP server's own output schema can
still carry one.
"""

from __future__ import annotations

import dis
import re
import types
from collections.abc import Sequence
from typing import Any

import jsonschema._keywords
import jsonschema._legacy_keywords
import jsonschema._utils
import re2

PATCHED_MODULES: tuple[types.ModuleType, ...] = (
    jsonschema._keywords,
    jsonschema._legacy_keywords,
    jsonschema._utils,
)
"""The `jsonschema` modules that match instances against a schema's regexes (`pattern`,
`patternProperties`, and the additional/unevaluated properties that consult the latter)."""

_REFUSED: dict[str, str] = {}
"""Patterns RE2 refused, with why (bounded: cleared when full)."""
_MAX_REFUSED = 1024


def re2_options() -> re2.Options:
    """RE2 options of every tenant pattern (errors are reported, not logged to stderr)."""
    options = re2.Options()
    options.log_errors = False
    return options


_OPTIONS = re2_options()


def check_pattern(pattern: str) -> None:
    """ValueError saying why RE2 cannot run `pattern`."""
    try:
        re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"not a valid RE2 pattern ({detail}); RE2 has no backreferences or lookarounds"
        ) from None


def compile_set(patterns: Sequence[str]) -> re2.Set:
    """`patterns` as one compiled RE2 search set (a guardrail's list, matched in one pass).

    Raises:
        ValueError: RE2 cannot compile them together (the set's program is larger than each
            pattern's alone: `\\p{L}{200}` compiles on its own but not as a set).
    """
    compiled = re2.Set.SearchSet(_OPTIONS)
    try:
        for pattern in patterns:
            compiled.Add(pattern)
        compiled.Compile()
    except re2.error:
        raise ValueError(
            "RE2 cannot compile these patterns as one set (together they need more than its "
            f"{_OPTIONS.max_mem // 2**20} MiB program budget); use fewer or smaller patterns "
            "(a large counted repetition such as \\p{L}{200} is the usual cause)"
        ) from None
    return compiled


def search(pattern: str, text: str) -> Any:
    """`re.search` in linear time: the first match of `pattern` in `text` (RE2), or None, also
    when RE2 cannot compile `pattern`. Compiled patterns are cached by `re2` itself."""
    if pattern in _REFUSED:
        return None
    try:
        regexp = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        if len(_REFUSED) >= _MAX_REFUSED:
            _REFUSED.clear()
        _REFUSED[pattern] = str(exc)
        return None
    return regexp.search(text)


LINEAR = types.SimpleNamespace(search=search)
"""What the patched modules see as `re`."""


def _re_attributes(module: types.ModuleType) -> set[str]:
    """The attributes the module's functions read off its global `re`."""
    used: set[str] = set()

    def walk(code: types.CodeType) -> None:
        previous: dis.Instruction | None = None
        for instruction in dis.get_instructions(code):
            if (
                previous is not None
                and previous.opname == "LOAD_GLOBAL"
                and previous.argval == "re"
                and instruction.opname in ("LOAD_ATTR", "LOAD_METHOD")
            ):
                used.add(str(instruction.argval))
            previous = instruction
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const)

    for value in vars(module).values():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            walk(value.__code__)
    return used


def install() -> None:
    """Make `jsonschema` match schema regexes with RE2 (idempotent).

    Raises:
        RuntimeError: this `jsonschema` release uses `re` in a way `LINEAR` does not cover
            (the gateway then refuses to start rather than run tenant regexes by backtracking).
    """
    for module in PATCHED_MODULES:
        current = getattr(module, "re", None)
        if current is LINEAR:
            continue
        if current is not re:
            raise RuntimeError(f"{module.__name__} no longer imports re: review linear_regex")
        unknown = _re_attributes(module) - {"search"}
        if unknown:
            raise RuntimeError(
                f"{module.__name__} uses re.{', re.'.join(sorted(unknown))}: review linear_regex"
            )
        module.re = LINEAR  # type: ignore[attr-defined]


def installed() -> bool:
    return all(getattr(module, "re", None) is LINEAR for module in PATCHED_MODULES)
