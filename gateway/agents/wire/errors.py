"""The stock openai client's error and retry rules, for the lean upstream client.

What escapes a model call must be what the stock client raises (the gateway maps
`openai.APIStatusError`, `APITimeoutError`, `APIConnectionError` and JSON errors to its own),
and a retry must happen exactly when the stock client would retry: 408, 409, 429 and 5xx
unless `x-should-retry` says otherwise, waiting the upstream's `Retry-After` (or
`retry-after-ms`) when it is in (0, 120] s, else 0.5 s doubling up to 8 s with up to 25 %
jitter, and no retry at all when `Retry-After` asks for more than 120 s (the limits are the
installed openai release's own constants).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping

import httpx2
import openai
import orjson
from openai._constants import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER_DELAY, MAX_RETRY_DELAY

_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The upstream's requested delay in seconds (`retry-after-ms`, then `retry-after` as
    seconds or an HTTP date), or None."""
    for header, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if delay == math.inf and value.strip().lower() not in ("inf", "+inf", "infinity"):
            return MAX_RETRY_AFTER_DELAY + 1
        return delay / divisor
    value = headers.get("retry-after")
    try:
        parsed = email.utils.parsedate_tz(value) if value is not None else None
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether the stock client retries an answer with this status and these headers."""
    delay = retry_after_s(headers)
    if delay is not None and math.isfinite(delay) and delay > MAX_RETRY_AFTER_DELAY:
        return False
    explicit = headers.get("x-should-retry")
    if explicit == "true":
        return True
    if explicit == "false":
        return False
    return status in (408, 409, 429) or status >= 500


def retry_delay_s(retries_done: int, headers: Mapping[str, str] | None) -> float:
    """How long to wait before the next attempt."""
    delay = retry_after_s(headers) if headers is not None else None
    if delay is not None and math.isfinite(delay) and 0 < delay <= MAX_RETRY_AFTER_DELAY:
        return delay
    backoff = min(INITIAL_RETRY_DELAY * pow(2.0, min(retries_done, 1000)), MAX_RETRY_DELAY)
    return max(backoff * (1 - 0.25 * random.random()), 0.0)  # noqa: S311 - jitter only


def status_error(
    request: httpx2.Request, status: int, headers: Mapping[str, str], content: bytes
) -> openai.APIStatusError:
    """The exception the stock client raises for this error answer (same class, message,
    body and response status/headers)."""
    response = httpx2.Response(status, headers=list(headers.items()), content=content)
    response.request = request
    message = f"Error code: {status}"
    text = content.decode("utf-8", errors="replace").strip()
    body: object = text
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
    data = body.get("error", body) if isinstance(body, dict) else body
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = openai.InternalServerError if status >= 500 else openai.APIStatusError
    return cls(message, response=response, body=data)
