"""Start and stop the per-process telemetry of an app: tenant label cap, trace processor
(with optional OTLP export) and the worker's multiprocess bookkeeping."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.core.config import Settings
from observability.exposition import mark_worker_dead, mark_worker_started
from observability.metrics import configure_tenant_labels
from observability.otlp import OtlpBridge, otlp_available
from observability.tracing import GatewayTraceProcessor, install_trace_processor

logger = logging.getLogger("gateway.tracing")


@dataclass
class Telemetry:
    """What `start_telemetry` set up; `stop()` tears it down off the event loop."""

    processor: GatewayTraceProcessor

    async def stop(self) -> None:
        """Flush OTLP spans from a worker thread and mark this worker dead for metrics."""
        await asyncio.to_thread(self.processor.shutdown)
        mark_worker_dead()


def start_telemetry(settings: Settings) -> Telemetry:
    """Set up this process's telemetry from `settings` (called by the app's lifespan)."""
    configure_tenant_labels(settings.metrics_max_tenants)
    otlp = None
    if settings.otlp_endpoint:
        if otlp_available():
            otlp = OtlpBridge(settings.otlp_endpoint)
        else:
            logger.warning(
                "GATEWAY_OTLP_ENDPOINT is set but the OpenTelemetry packages are missing: "
                "install the `otlp` extra; traces are not exported"
            )
    processor = install_trace_processor(
        export_to_openai=settings.tracing_export, log_prompts=settings.log_prompts, otlp=otlp
    )
    mark_worker_started()
    return Telemetry(processor)
