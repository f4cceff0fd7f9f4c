"""Map what escapes `Runner.run` to gateway errors and usage-record statuses."""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING

import openai
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    UserError,
)

from gateway.agents.guardrails import CLASSIFIER_GUARDRAIL
from gateway.agents.output import InvalidModelOutput
from gateway.agents.wire.errors import retry_after_s
from gateway.core.db import DatabaseUnavailableError, is_database_unavailable
from gateway.core.egress import refusal_of
from gateway.core.errors import (
    GatewayError,
    GuardrailTriggeredError,
    RateLimitedError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationFailedError,
)
from gateway.tools.mcp import server_clashes_with_tool, servers_clash
from observability.metrics import UPSTREAM_REQUESTS

if TYPE_CHECKING:
    from gateway.runs.meter import RunMeter

logger = logging.getLogger("gateway.runs")


def run_status(exc: BaseException) -> str:
    """The usage-record status of a run that failed with `exc`: `rate_limited` or `failed`
    (SPEC §10's statuses; a tripped guardrail fails the run, its 400 says which)."""
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    return "failed"


def _upstream_failed(model: str, status: str, meter: RunMeter | None) -> None:
    UPSTREAM_REQUESTS.labels(model, status).inc()
    if meter is not None:
        meter.failed_status = status


RETRY_AFTER_MAX_S = 86_400
"""An upstream's Retry-After is passed on up to a day (beyond that it is not advice)."""


def _upstream_retry_after(exc: openai.APIStatusError) -> dict[str, str]:
    """The Retry-After of a 502 for an upstream that refused: the upstream's own delay
    (rounded up to whole seconds, at least 1) when it sent one, and 1 s for a 429 or 503
    that named none, so a client backs off as the upstream asked."""
    delay = retry_after_s(exc.response.headers)
    if delay is None or not math.isfinite(delay):
        if exc.status_code not in (429, 503):
            return {}
        delay = 1.0
    return {"Retry-After": str(min(max(1, math.ceil(delay)), RETRY_AFTER_MAX_S))}


def map_run_error(
    exc: BaseException, *, model: str, max_turns: int, meter: RunMeter | None = None
) -> GatewayError:
    """The error the client sees for a failed run (never a stack trace). An upstream failure
    is counted by its status, and `meter` times the call it ended with that status."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UserError) and isinstance(exc.__cause__, GatewayError):
        # Raised inside a tool (a stored secret unreadable, say): the SDK wraps it as
        # "Error running tool …"; the client gets the gateway's own error.
        return exc.__cause__
    if isinstance(exc, InputGuardrailTripwireTriggered):
        return GuardrailTriggeredError(
            CLASSIFIER_GUARDRAIL,
            "The input classifier stopped the run (guardrail input.classifier).",
        )
    if isinstance(exc, InvalidModelOutput):
        return UpstreamError(
            f"The model's answer is not valid output for this agent: {exc.message}.",
            code="invalid_model_output",
        )
    if isinstance(exc, openai.APITimeoutError):
        _upstream_failed(model, "timeout", meter)
        return UpstreamTimeoutError()
    if isinstance(exc, openai.APIStatusError):
        _upstream_failed(model, str(exc.status_code), meter)
        return UpstreamError(
            f"The model upstream answered {exc.status_code}.",
            code=f"upstream_{exc.status_code}",
            headers=_upstream_retry_after(exc),
        )
    if isinstance(exc, openai.APIConnectionError):
        _upstream_failed(model, "unreachable", meter)
        refusal = refusal_of(exc)
        why = "" if refusal is None else f": its address is not allowed ({refusal})"
        return UpstreamError(
            f"The model upstream could not be reached{why}.", code="upstream_unreachable"
        )
    if isinstance(
        exc, openai.APIResponseValidationError | ModelBehaviorError | json.JSONDecodeError
    ):
        _upstream_failed(model, "bad_response", meter)
        return UpstreamError("The model upstream sent an invalid response.", code="bad_response")
    if is_database_unavailable(exc):
        logger.warning("run failed: database unavailable (%s)", type(exc).__name__)
        return DatabaseUnavailableError(headers={"Retry-After": "1"})
    if isinstance(exc, UserError) and "Duplicate tool names" in str(exc):
        # Two MCP servers (or an MCP server and another tool) offer the same tool name: the
        # PUT check catches what the spec states; a server's own list can still clash.
        # The SDK's message goes on about its own API: only the names are the tenant's.
        return servers_clash(exc.message.split(": ", 1)[-1].split(". ", 1)[0])
    if (
        isinstance(exc, UserError)
        and str(exc).startswith("Ambiguous")
        and "tool name `" in str(exc)
    ):
        return server_clashes_with_tool(str(exc).split("`")[1] if str(exc).count("`") >= 2 else "?")
    if isinstance(exc, MaxTurnsExceeded):
        return ValidationFailedError(
            f"The agent used its {max_turns} turns without a final answer.",
            code="max_turns_exceeded",
        )
    logger.error("run failed unexpectedly", exc_info=exc)
    return GatewayError()
