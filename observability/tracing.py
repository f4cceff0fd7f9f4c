"""Agents SDK tracing: our own processor replaces the SDK's upload to OpenAI.

The SDK's default processor sends prompts and outputs to OpenAI's trace store. The gateway
replaces it at start-up, so nothing leaves the deployment unless the operator opts in
(`GATEWAY_TRACING_EXPORT=true` for OpenAI, `GATEWAY_OTLP_ENDPOINT` for an OTLP collector).

`GatewayTraceProcessor` turns finished spans, at debug level, into one log line per span with
the run's tenant and agent (the run's `workflow_name` is `<tenant_slug>/<agent>`), and mirrors
them to OTLP when configured. Prompt and output text only appear in those lines with
`GATEWAY_LOG_PROMPTS=true`.

Spans cost CPU on every run (ids, timestamps, the processor calls: 60-80 µs of a ~900 µs run
loop), so a run makes them only when something reads them (`spans_wanted`: OTLP, the OpenAI
exporter, or this logger at debug level). The metrics never depend on them: model-call
latency and handoffs are counted by the run's hooks (`gateway/runs/meter.py`), guardrails and
tool calls where they run.

The SDK calls processors synchronously on the event loop, so everything here is cheap:
counters, a dict of the traces in progress (bounded by the runs in flight) and, with OTLP,
handing finished spans to OpenTelemetry's batch processor, which exports from its own thread.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from agents.tracing import TracingProcessor, set_trace_processors
from agents.tracing.processors import default_processor

logger = logging.getLogger("gateway.tracing")
UNKNOWN = "unknown"
_exporting = False
"""An installed processor exports spans (OTLP or OpenAI)."""


def spans_wanted() -> bool:
    """True when something reads the SDK's spans: an exporter, or span logs at debug level
    (a run passes `tracing_disabled=not spans_wanted()`)."""
    return _exporting or logger.isEnabledFor(logging.DEBUG)


def _response_text(response: Any) -> str:
    """The text of a Responses answer's messages, and its tool calls (name and arguments)."""
    parts: list[str] = []
    for item in getattr(response, "output", None) or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            parts.extend(
                text for c in item.content if isinstance(text := getattr(c, "text", None), str)
            )
        elif kind == "function_call":
            parts.append(f"{item.name}({item.arguments})")
    return "\n".join(parts)


def _seconds(span: Any) -> float | None:
    try:
        started = datetime.fromisoformat(span.started_at)
        ended = datetime.fromisoformat(span.ended_at)
    except (TypeError, ValueError):
        return None
    return (ended - started).total_seconds()


def _model_of(data: Any) -> str:
    model = getattr(data, "model", None)
    if model is None:
        model = getattr(getattr(data, "response", None), "model", None)
    return str(model) if model else UNKNOWN


class GatewayTraceProcessor(TracingProcessor):
    """Spans -> debug log lines; optionally mirrored to OpenTelemetry."""

    def __init__(self, *, log_prompts: bool = False, otlp: Any = None) -> None:
        self.log_prompts = log_prompts
        self.otlp = otlp
        # trace id -> (tenant slug, agent) for the traces in progress.
        self._workflows: dict[str, tuple[str, str]] = {}

    def on_trace_start(self, trace: Any) -> None:
        tenant, _, agent = str(getattr(trace, "name", "") or "").partition("/")
        self._workflows[trace.trace_id] = (tenant or UNKNOWN, agent or UNKNOWN)
        if self.otlp is not None:
            self.otlp.trace_started(trace, tenant, agent)

    def on_trace_end(self, trace: Any) -> None:
        self._workflows.pop(trace.trace_id, None)
        if self.otlp is not None:
            self.otlp.trace_ended(trace)

    def on_span_start(self, span: Any) -> None:
        if self.otlp is not None:
            self.otlp.span_started(span)

    def on_span_end(self, span: Any) -> None:
        data = span.span_data
        if self.otlp is not None:
            self.otlp.span_ended(span, self._describe(data) if self.log_prompts else {})
        if logger.isEnabledFor(logging.DEBUG):
            tenant, agent = self._workflows.get(span.trace_id, (UNKNOWN, UNKNOWN))
            self._log(span, getattr(data, "type", UNKNOWN), tenant, agent)

    def _describe(self, data: Any) -> dict[str, str]:
        """Prompt/output text of a span (only used with `GATEWAY_LOG_PROMPTS=true`)."""
        described: dict[str, str] = {}
        for attribute in ("input", "output"):
            value = getattr(data, attribute, None)
            if value is not None:
                described[attribute] = str(value)[:4000]
        if "output" not in described:
            # A response span holds the model's answer in its response, not in `output`.
            answer = _response_text(getattr(data, "response", None))
            if answer:
                described["output"] = answer[:4000]
        return described

    def _log(self, span: Any, kind: str, tenant: str, agent: str) -> None:
        data = span.span_data
        seconds = _seconds(span)
        fields: dict[str, Any] = {
            "tenant": tenant,
            "agent": agent,
            "span_type": kind,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "duration_ms": round(seconds * 1000, 2) if seconds is not None else None,
            "error": span.error.get("message") if span.error else None,
        }
        if kind == "function":
            fields["tool"] = data.name
        elif kind in ("response", "generation"):
            fields["model"] = _model_of(data)
        elif kind == "handoff":
            fields["from_agent"], fields["to_agent"] = data.from_agent, data.to_agent
        elif kind == "guardrail":
            fields["guardrail"], fields["triggered"] = data.name, data.triggered
        if self.log_prompts:
            fields.update(self._describe(data))
        logger.debug("span %s ended", kind, extra=fields)

    def shutdown(self) -> None:
        """Blocking (flushes OTLP): call from a thread, never on the event loop."""
        if self.otlp is not None:
            self.otlp.shutdown()

    def force_flush(self) -> None:
        """Blocking (exports pending OTLP spans): call from a thread, never on the event loop."""
        if self.otlp is not None:
            self.otlp.force_flush()


def install_trace_processor(
    *, export_to_openai: bool = False, log_prompts: bool = False, otlp: Any = None
) -> GatewayTraceProcessor:
    """Install our processor (and the SDK's exporter only when explicitly enabled).

    Args:
        export_to_openai: Also upload traces to OpenAI (`GATEWAY_TRACING_EXPORT`).
        log_prompts: Include prompt/output text in debug lines and OTLP spans.
        otlp: An `observability.otlp.OtlpBridge` that mirrors spans to a collector.
    """
    global _exporting
    processor = GatewayTraceProcessor(log_prompts=log_prompts, otlp=otlp)
    _exporting = otlp is not None or export_to_openai
    processors: list[TracingProcessor] = [processor]
    if export_to_openai:
        processors.append(default_processor())
    set_trace_processors(processors)
    return processor
