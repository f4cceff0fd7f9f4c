"""OTLP export: spans of a run reach a collector over real HTTP (a stub counting OTLP posts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from observability.otlp import otlp_available
from tests.conftest import unavailable
from tests.gateway.conftest import gateway_for


class Collector:
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.posts = 0
        self.lock = threading.Lock()


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    if not otlp_available():
        unavailable("OpenTelemetry", "the `otlp` extra is not installed (pip install -e '.[otlp]')")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    seen = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with seen.lock:
                seen.posts += 1
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        seen.spans.extend(scope.spans)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", seen
    server.shutdown()
    server.server_close()


async def test_run_spans_are_exported_over_otlp_http(
    sqlite_url: str, mock_llm_base_url: str, collector: tuple[str, Collector]
) -> None:
    endpoint, seen = collector
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, otlp_endpoint=endpoint):
        tenant = await gw.create_tenant("traced")
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": "What is 6*7? Use the calculator."},
            headers=tenant.headers,
        )
        assert r.status_code == 200
        # Exported by the batch processor's own thread; poll (never flush on the loop).
        deadline = time.monotonic() + 20
        while not any(s.name == "run traced/assistant" for s in list(seen.spans)):
            assert time.monotonic() < deadline, f"collector got {len(seen.spans)} spans"
            time.sleep(0.1)
    with seen.lock:
        spans = list(seen.spans)
    names = {s.name for s in spans}
    assert {"run traced/assistant", "function calculator", "agent assistant"} <= names
    root = next(s for s in spans if s.name == "run traced/assistant")
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["gateway.tenant"] == "traced"
    # Children hang under the run's root span, in one trace.
    tool = next(s for s in spans if s.name == "function calculator")
    assert tool.trace_id == root.trace_id
    model_spans = [s for s in spans if s.name.startswith(("response", "generation"))]
    assert len(model_spans) == 2 and all(s.trace_id == root.trace_id for s in model_spans)
    # No prompt text leaves without GATEWAY_LOG_PROMPTS.
    assert all(not a.key.startswith("agents.input") for s in spans for a in s.attributes)
