"""Optional OTLP/HTTP export of the Agents SDK spans (the `otlp` extra).

With `GATEWAY_OTLP_ENDPOINT` set and the OpenTelemetry packages installed
(`pip install 'agent-gateway[otlp]'`), each SDK trace becomes an OpenTelemetry trace: a root
span `run <tenant>/<agent>` and one child span per SDK span (agent, response/generation,
function, handoff, guardrail), keeping the SDK's nesting. Spans are started and ended as the
SDK reports them (cheap, on the event loop) and exported in batches by OpenTelemetry's
`BatchSpanProcessor` from its own thread; flushing and shutdown block, so the app calls them
from a worker thread only.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("gateway.tracing")
SERVICE_NAME = "agent-gateway"
EXPORT_DELAY_MS = 1000


def otlp_available() -> bool:
    """True when the `otlp` extra (OpenTelemetry SDK + OTLP/HTTP exporter) is installed."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


class OtlpBridge:
    """Mirrors SDK traces and spans to OpenTelemetry spans exported over OTLP/HTTP."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # A provider of our own (not the global one): the app owns its lifecycle.
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=EXPORT_DELAY_MS
            )
        )
        self.tracer = self.provider.get_tracer("agent_gateway")
        self._open: dict[str, Any] = {}  # SDK trace/span id -> open OTel span (bounded by runs)
        self._closed = False

    def _start(self, key: str, name: str, parent_key: str | None, attributes: Any) -> None:
        from opentelemetry import trace

        parent = self._open.get(parent_key) if parent_key else None
        context = trace.set_span_in_context(parent) if parent is not None else None
        self._open[key] = self.tracer.start_span(name, context=context, attributes=attributes)

    def trace_started(self, sdk_trace: Any, tenant: str, agent: str) -> None:
        self._start(
            sdk_trace.trace_id,
            f"run {tenant}/{agent}",
            None,
            {"gateway.tenant": tenant, "gateway.agent": agent},
        )

    def trace_ended(self, sdk_trace: Any) -> None:
        span = self._open.pop(sdk_trace.trace_id, None)
        if span is not None:
            span.end()

    def span_started(self, sdk_span: Any) -> None:
        data = sdk_span.span_data
        kind = getattr(data, "type", "span")
        name = getattr(data, "name", None)
        self._start(
            sdk_span.span_id,
            f"{kind} {name}" if isinstance(name, str) else kind,
            sdk_span.parent_id or sdk_span.trace_id,
            {"agents.span_type": kind, "agents.span_id": sdk_span.span_id},
        )

    def span_ended(self, sdk_span: Any, text: dict[str, str]) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._open.pop(sdk_span.span_id, None)
        if span is None:
            return
        data = sdk_span.span_data
        response = getattr(data, "response", None)
        model = getattr(data, "model", None) or getattr(response, "model", None)
        if model:
            span.set_attribute("gen_ai.request.model", str(model))
        for key, value in text.items():
            span.set_attribute(f"agents.{key}", value)
        if sdk_span.error:
            span.set_status(Status(StatusCode.ERROR, str(sdk_span.error.get("message"))))
        span.end()

    def force_flush(self) -> None:
        """Export what is pending (blocking)."""
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter thread (blocking; idempotent)."""
        if self._closed:
            return
        self._closed = True
        for span in self._open.values():
            span.end()
        self._open.clear()
        self.provider.shutdown()
