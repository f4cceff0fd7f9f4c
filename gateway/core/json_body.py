"""JSON request bodies: parsed strictly, nesting bounded, every failure a 422 `invalid_json`.

FastAPI reads a JSON body with `json.loads`, which answers invalid UTF-8 and very deep nesting
with exceptions it turns into a generic 400. Every router of the gateway uses `JsonBodyRoute`
(`route_class=`), whose request parses with orjson instead: stricter (invalid UTF-8, lone
surrogates and NaN are refused) and faster, and every failure is a `json.JSONDecodeError`, which
the 422 `invalid_json` of the error handler. Nesting deeper than
`GATEWAY_MAX_JSON_DEPTH` is refused the same way (WebSocket frames use `nesting_error` too).
The error waits until the route's dependencies ran: a request without a valid credential is
401, an over-limit one 429, before its body is judged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response, params
from fastapi.routing import APIRoute

DEFAULT_MAX_DEPTH = 64


def too_deep(value: Any, max_depth: int) -> bool:
    """True when `value` nests arrays and objects more than `max_depth` levels deep."""
    level: list[Any] = [value]
    for _ in range(max_depth):
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                below.extend(v for v in item if isinstance(v, dict | list))
        if not below:
            return False
        level = below
    return True


def nesting_error(raw: bytes | str, value: Any, max_depth: int) -> json.JSONDecodeError | None:
    """The error for a parsed document nested deeper than `max_depth`, else None.

    The walk only happens when the text holds more openers than `max_depth` (the count is a C
    loop over the bytes): ordinary requests never pay for it.
    """
    openers = raw.count("[") + raw.count("{") if isinstance(raw, str) else _byte_openers(raw)
    if openers <= max_depth or not too_deep(value, max_depth):
        return None
    return json.JSONDecodeError(f"nested deeper than {max_depth} levels", "", 0)


def _byte_openers(raw: bytes) -> int:
    return raw.count(b"[") + raw.count(b"{")


_LONG_DIGITS = re.compile(rb"[0-9]{20}")
"""Twenty digits in a row: maybe an integer past 64 bits, which orjson reads as a float."""


def parse_json(raw: bytes | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """`raw` parsed, or `json.JSONDecodeError` (invalid JSON, bad UTF-8, too deep, or an
    integer past 64 bits: orjson would silently read it as a float, and could not write it)."""
    value = orjson.loads(raw)  # orjson.JSONDecodeError is a json.JSONDecodeError
    error = nesting_error(raw, value, max_depth)
    if error is not None:
        raise error
    data = raw.encode() if isinstance(raw, str) else raw
    if _LONG_DIGITS.search(data) is not None and _has_huge_integer(json.loads(data)):
        raise json.JSONDecodeError("an integer does not fit in 64 bits", "", 0)
    return value


def _has_huge_integer(value: Any) -> bool:
    """True when an integer of the document is outside the signed or unsigned 64-bit range."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not -(2**63) <= item < 2**64:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
FORM_EXPECTED_KEY = "form_expected"
"""Set in the request state when a form route (`POST /admin/login`) got another body type."""

INVALID_JSON_KEY = "invalid_json"
"""Where a body's `json.JSONDecodeError` waits in the request state for the error handler."""


def invalid_json_error(scope_state: dict[str, Any] | None) -> json.JSONDecodeError | None:
    """The parse error of this request's body, if it was not valid JSON."""
    error = (scope_state or {}).get(INVALID_JSON_KEY)
    return error if isinstance(error, json.JSONDecodeError) else None


class JsonBodyRequest(Request):
    """A request whose `json()` is `parse_json` under the app's `max_json_depth`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            settings = getattr(self.scope["app"].state, "settings", None)
            max_depth = getattr(settings, "max_json_depth", DEFAULT_MAX_DEPTH)
            raw = await self.body()
            try:
                self._json = parse_json(raw, max_depth)
            except json.JSONDecodeError as exc:
                # FastAPI is handed the raw bytes, which no body model accepts: the body's
                # validation fails after the route's dependencies ran (the credential checked
                # and the request counted first: 401 and 429 come before this 422), and the
                # error handler answers `invalid_json` with the parse error kept here.
                self.scope.setdefault("state", {})[INVALID_JSON_KEY] = exc
                self._json = raw
        return self._json


def is_json_type(content_type: str) -> bool:
    """`application/json` or `application/<x>+json` (parameters ignored), as FastAPI reads it."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBodyRoute(APIRoute):
    """The route class of every gateway router: its handler reads JSON through
    `JsonBodyRequest`.

    A body sent with another Content-Type (`curl -d` sends a form type) or none is not read
    as JSON by FastAPI: its validation would say "Input should be a valid dictionary". The request
    gets the `invalid_json` error naming the Content-Type instead (only when the body fails
    validation: an empty optional body stays fine).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_form = self.body_field is not None and isinstance(
            self.body_field.field_info, params.Form
        )
        takes_body = self.body_field is not None and not takes_form

        async def handle(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if takes_form:
                media = (content_type or "").split(";", 1)[0].strip().lower()
                if media not in FORM_TYPES:
                    request.scope.setdefault("state", {})[FORM_EXPECTED_KEY] = True
            elif takes_body and (not content_type or not is_json_type(content_type)):
                sent = f"is {content_type[:100]!r}" if content_type else "is missing"
                error = json.JSONDecodeError(
                    f"the Content-Type {sent}; send the body as JSON with Content-Type: "
                    "application/json",
                    "",
                    0,
                )
                request.scope.setdefault("state", {})[INVALID_JSON_KEY] = error
            return await handler(JsonBodyRequest(request.scope, request.receive, request._send))

        return handle
