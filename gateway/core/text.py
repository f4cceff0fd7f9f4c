"""Strings the database can store: the character rules every input goes through.

PostgreSQL's `text` cannot hold NUL (U+0000), and a lone surrogate (U+D800..U+DFFF, which the
JSON escape `\\ud800` produces) cannot be encoded as UTF-8 at all. One such string in a usage
record used to fail the whole write batch, so they are refused at the API with a 422 whose
`param` names the field:

- `Label`: names, models, slugs, ids, metadata keys, anything used as an identifier or a label:
  no control character at all (C0 U+0000..U+001F, DEL U+007F, C1 U+0080..U+009F).
- `Text`: free-form text (instructions, descriptions, message content, metadata values): no
  NUL. Tab, newlines and the other controls are kept: PostgreSQL stores them and pasted text
  carries them (form feeds, terminal escapes).

Both refuse lone surrogates: pydantic does so for every declared `str` field, and
`check_json_tree` does it for free-form JSON (`metadata`, JWKS documents). Path and query
parameters are held to the `Label` rule for every route (`refuse_control_characters`): 404 for
a path parameter (no resource can be named so), 422 for a query parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi.requests import HTTPConnection
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from gateway.core.errors import NotFoundError, ValidationFailedError
from gateway.core.stored import is_stored

LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""JSON-schema pattern of a `Label`: no C0 or C1 control character, no DEL."""
TEXT_PATTERN = r"^[^\x00]*$"
"""JSON-schema pattern of a `Text`: no NUL."""

LABEL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
TEXT_FORBIDDEN = re.compile(r"[\x00\ud800-\udfff]")
LABEL_RULE = "must not contain control characters (U+0000 to U+001F, U+007F to U+009F)"
TEXT_RULE = "must not contain NUL (U+0000) characters"
SURROGATE_RULE = "must be valid Unicode (a lone surrogate, U+D800 to U+DFFF, cannot be stored)"


def broken_rule(forbidden: re.Pattern[str], rule: str, value: str) -> str | None:
    """The rule `value` breaks (`rule`, or the surrogate rule), or None."""
    found = forbidden.search(value)
    if found is None:
        return None
    return SURROGATE_RULE if "\ud800" <= found.group() <= "\udfff" else rule


@dataclass(frozen=True, slots=True)
class _Refuse:
    """Pydantic annotation: refuse strings with a forbidden character (and say so in the schema)."""

    forbidden: re.Pattern[str]
    pattern: str
    rule: str
    put_only: bool = False
    """Only for what is sent: a stored row (`gateway.core.stored`) written before the rule
    still loads."""

    def check(self, value: str) -> str:
        broken = broken_rule(self.forbidden, self.rule, value)
        if broken is not None:
            raise PydanticCustomError("forbidden_character", broken)
        return value

    def check_sent(self, value: str, info: core_schema.ValidationInfo) -> str:
        return value if is_stored(info.context) else self.check(value)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        if self.put_only:
            return core_schema.with_info_after_validator_function(self.check_sent, handler(source))
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        rendered = handler(schema)
        rendered.setdefault("pattern", self.pattern)
        return rendered


LABEL = _Refuse(LABEL_FORBIDDEN, LABEL_PATTERN, LABEL_RULE)
TEXT = _Refuse(TEXT_FORBIDDEN, TEXT_PATTERN, TEXT_RULE)

Label = Annotated[str, LABEL]
"""A name, model, id or key: no control characters."""

URL_PATTERN = r"^[^\x00-\x20\x7f]*$"
"""JSON-schema pattern of a `Url`: no control character and no space."""
URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")
URL_RULE = "must not contain spaces or control characters (write a space in a URL as %20)"
URL = _Refuse(URL_FORBIDDEN, URL_PATTERN, URL_RULE, put_only=True)
Url = Annotated[str, URL]
"""A URL as sent: a space in it (one pasted with a trailing blank) would make every call to it
fail at run time, so it is refused when it is stored."""
Text = Annotated[str, TEXT]
"""Free-form text: no NUL."""

DISPLAY_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
"""JSON-schema pattern of a `DisplayName`: a `Label` with at least one character that is not a
space."""
BLANK_RULE = "must hold at least one character other than a space"


@dataclass(frozen=True, slots=True)
class _DisplayName:
    """Pydantic annotation of a `DisplayName`. The schema's rules hold for the string as sent
    (so every string the schema refuses is refused, and every one it allows is taken); the
    spaces around it are trimmed after."""

    def check(self, value: str) -> str:
        broken = broken_rule(LABEL_FORBIDDEN, LABEL_RULE, value)
        if broken is not None:
            raise PydanticCustomError("forbidden_character", broken)
        trimmed = value.strip(" ")
        if not trimmed:
            raise PydanticCustomError("blank", BLANK_RULE)
        return trimmed

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self.check, core_schema.str_schema(max_length=DISPLAY_NAME_MAX)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        rendered = handler(schema)
        rendered.update(minLength=1, pattern=DISPLAY_NAME_PATTERN)
        return rendered


DISPLAY_NAME_MAX = 200
DisplayName = Annotated[str, _DisplayName()]
"""A tenant's or a key's human name: at most 200 characters, no control character, not blank;
the spaces around it are trimmed."""


def forbidden_in_tree(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, rule) of every string in a JSON value that breaks its rule: keys are labels,
    string values are text. `path` is dotted (`metadata.key`, `jwks.keys.0.n`)."""
    if isinstance(value, str):
        broken = broken_rule(TEXT_FORBIDDEN, TEXT_RULE, value)
        if broken is not None:
            yield path, broken
    elif isinstance(value, dict):
        for key, item in value.items():
            broken = broken_rule(LABEL_FORBIDDEN, LABEL_RULE, str(key))
            if broken is not None:
                yield path, f"keys {broken}"
                continue
            where = f"{path}.{key}" if path else str(key)
            yield from forbidden_in_tree(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from forbidden_in_tree(item, f"{path}.{index}" if path else str(index))


def check_json_tree(value: Any) -> None:
    """Raise a ValueError naming the first string of a free-form JSON value that breaks its
    rule (for a pydantic validator)."""
    for where, rule in forbidden_in_tree(value):
        raise ValueError(f"{where}: {rule}" if where else rule)


CREATED_BY_PUT = frozenset({"name", "model"})
"""Path parameters a PUT names a new resource by (an agent, an upstream, a model's price)."""


async def refuse_control_characters(connection: HTTPConnection) -> None:
    """App-wide dependency, before anything looks a parameter up: a path parameter holding a
    control character names nothing that can exist (404 naming it), except the name a PUT
    would create, which is an invalid value (422); a query parameter holding one is a 422
    naming it."""
    for name, value in connection.path_params.items():
        if isinstance(value, str) and LABEL_FORBIDDEN.search(value):
            if connection.scope.get("method") == "PUT" and name in CREATED_BY_PUT:
                raise ValidationFailedError(
                    f"{name}: {LABEL_RULE}", code="invalid_value", param=name
                )
            raise NotFoundError(f"Not found ({name} {LABEL_RULE}).", param=name)
    for name, value in connection.query_params.multi_items():
        if LABEL_FORBIDDEN.search(name) or LABEL_FORBIDDEN.search(value):
            param = name if not LABEL_FORBIDDEN.search(name) else None
            raise ValidationFailedError(
                f"{param or 'query'}: {LABEL_RULE}", code="invalid_value", param=param
            )
