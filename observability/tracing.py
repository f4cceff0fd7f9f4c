"""Agents SDK tracing: our own processor replaces the SDK's upload to OpenAI.

The SDK's default processor sends prompts and outputs to OpenAI's trace store. The gateway
replaces it at start-up, so nothing leaves the deployment unless the operator opts in
(`GATEWAY_TRACING_EXPORT=true`).
"""

from __future__ import annotations

import logging
from typing import Any

from agents.tracing import TracingProcessor, set_trace_processors
from agents.tracing.processors import default_processor

logger = logging.getLogger("gateway.tracing")


class GatewayTraceProcessor(TracingProcessor):
    """Logs span timings at debug level; never blocks the event loop."""

    def on_trace_start(self, trace: Any) -> None:
        return None

    def on_trace_end(self, trace: Any) -> None:
        return None

    def on_span_start(self, span: Any) -> None:
        return None

    def on_span_end(self, span: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            data = span.span_data
            logger.debug(
                "span %s ended", getattr(data, "type", "unknown"), extra={"trace": span.trace_id}
            )

    def shutdown(self) -> None:
        return None

    def force_flush(self) -> None:
        return None


def install_trace_processor(*, export_to_openai: bool = False) -> None:
    """Install our processor (and the SDK's exporter only when explicitly enabled)."""
    processors: list[TracingProcessor] = [GatewayTraceProcessor()]
    if export_to_openai:
        processors.append(default_processor())
    set_trace_processors(processors)
