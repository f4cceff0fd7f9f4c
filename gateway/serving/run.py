"""`serve`: the gateway on host:port with N worker processes, drained on SIGTERM."""

from __future__ import annotations

import os
import shutil

from uvicorn.config import STARTUP_FAILURE

from gateway.core.config import Settings
from gateway.core.http_protocol import PROTOCOL as HEAD_LIMITED_HTTP
from gateway.core.ws_protocol import PROTOCOL as JSON_REFUSING_WS
from gateway.serving.server import GatewayConfig, GatewayServer
from gateway.serving.supervisor import Supervisor
from observability.logs import logging_config
from observability.multiproc import MULTIPROC_ENV, prepare_multiprocess_dir


def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Serve until SIGTERM / SIGINT and the drain are done; the process exit status."""
    metrics_dir = None
    if workers > 1:
        # prometheus_client picks its multiprocess mode when first imported: the variable must
        # be in the environment the spawned workers inherit (see observability/exposition.py).
        metrics_dir = prepare_multiprocess_dir(settings.metrics_dir, port)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    config = GatewayConfig(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools with a cap on the request line and headers (431 before the app).
        http=HEAD_LIMITED_HTTP,
        # websockets with JSON refusals that never quote a header, and no debug frame dumps.
        ws=JSON_REFUSING_WS,
        access_log=False,  # the gateway writes its own JSON access line per request
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # WebSocket frames are bounded like request bodies, before they are read whole.
        ws_max_size=settings.max_body_bytes,
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
    )
    try:
        if workers > 1:
            return Supervisor(config, workers).run()
        server = GatewayServer(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
