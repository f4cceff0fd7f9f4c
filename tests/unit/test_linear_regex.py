"""`jsonschema` matches schema regexes with RE2 once `tenants.agent.json_schema` is imported:
also the stock validator the MCP client checks a tool's structured output with."""

from __future__ import annotations

import time

import jsonschema
import pytest

import tenants.agent.json_schema  # noqa: F401 (installs the linear engine)
from gateway.core import linear_regex

EVIL = "a" * 40 + "!"


def test_the_stock_validator_matches_in_linear_time() -> None:
    assert linear_regex.installed()
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    validator = jsonschema.validators.validator_for(schema)(schema)
    started = time.perf_counter()
    errors = sorted(e.message for e in validator.iter_errors({"s": EVIL, EVIL: 1}))
    assert time.perf_counter() - started < 0.5  # Python's re: hours at 40 characters
    assert errors == [
        f"'{EVIL}' does not match '^(a+)+$'",
        f"'{EVIL}' does not match any of the regexes: '^(a+)+$'",
    ]
    assert list(validator.iter_errors({"s": "aaa", "aa": 1})) == []


def test_unevaluated_properties_consult_patterns_in_linear_time() -> None:
    schema = {"patternProperties": {"^(a+)+$": True}, "unevaluatedProperties": False}
    validator = jsonschema.Draft202012Validator(schema)
    started = time.perf_counter()
    assert not validator.is_valid({EVIL: 1})
    assert validator.is_valid({"aaaa": 1})
    assert time.perf_counter() - started < 0.5


def test_a_pattern_re2_cannot_run_never_matches_and_is_refused_by_the_check() -> None:
    assert linear_regex.search("(?=a)a", "a") is None
    assert not jsonschema.Draft202012Validator({"pattern": "(?=a)a"}).is_valid("a")
    with pytest.raises(ValueError, match="RE2"):
        linear_regex.check_pattern("(a)\\1")
    linear_regex.check_pattern("^[a-z]+$")


def test_install_is_idempotent() -> None:
    linear_regex.install()
    linear_regex.install()
    assert linear_regex.installed()


def test_re2_syntax_that_pythons_re_lacks_is_accepted_and_matched() -> None:
    """The PUT check reads the meta-schema's `format: regex` as RE2: `\\p{L}` and `\\x{00e9}`
    (which Python's `re` refuses) are valid, and match as RE2 does."""
    from tenants.agent.json_schema import check_json_schema

    letters = {"type": "object", "properties": {"a": {"type": "string", "pattern": r"^\p{L}+$"}}}
    check_json_schema(letters)
    check_json_schema({"type": "string", "pattern": r"^[\x{00e9}]$"})
    validator = jsonschema.Draft202012Validator(letters)
    assert validator.is_valid({"a": "café"}) and not validator.is_valid({"a": "abc1"})
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check_json_schema({"type": "object", "required": 3})
