"""The WebSocket protocol `gateway serve` runs: uvicorn's websockets (sans-I/O) protocol, with
handshake refusals in the API's JSON error shape that never quote the request, and without
the library's debug dump of headers and frames.

- websockets refuses a handshake it cannot parse with a plain-text body that quotes the
  offending header ("invalid Sec-WebSocket-Protocol header: expected comma at 63 in
  agent-gateway, bearer.gw_…"), and a browser's credential travels in that header
  (`bearer.<token>`, see `gateway.auth.dependencies`). Here every refusal made below the app
  (a malformed handshake, a request websockets cannot read) is the JSON error body of its
  status, naming no header value; building the text of one with a byte that is not UTF-8 in
  it no longer fails (it used to, and the traceback was logged with the header in it).
- At `GATEWAY_LOG_LEVEL=debug` websockets logs every handshake header and every frame
  (credentials, prompts, answers) through uvicorn's logger: off unless
  `GATEWAY_LOG_PROMPTS=true`.

Selected with `uvicorn.run(ws="gateway.core.ws_protocol:GatewayWebSocketProtocol")`.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.server import ServerProtocol
from websockets.typing import StatusLike

from gateway.core.config import get_settings
from gateway.core.errors import error_body

PROTOCOL = "gateway.core.ws_protocol:GatewayWebSocketProtocol"

REFUSALS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_handshake", "The WebSocket handshake is invalid."),
    403: ("permission_error", "forbidden", "The WebSocket connection was refused."),
    426: ("invalid_request_error", "upgrade_required", "This endpoint needs a WebSocket."),
}
INTERNAL = ("internal_error", "internal_error", "Internal server error.")


class JsonRefusals(ServerProtocol):
    """websockets' server side whose refusals are JSON error bodies (`text` is not sent)."""

    def reject(self, status: StatusLike, text: str) -> Response:
        status = http.HTTPStatus(status)
        error_type, code, message = REFUSALS.get(status.value, INTERNAL)
        body = orjson.dumps(error_body(error_type, code, message))
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", "application/json"),
            ]
        )
        return Response(status.value, status.phrase, headers, body)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        stock = self.conn  # as uvicorn built it, before any byte was read
        self.conn = JsonRefusals(
            extensions=stock.available_extensions, max_size=config.ws_max_size, logger=stock.logger
        )
        self.conn.debug = stock.debug and get_settings().log_prompts
