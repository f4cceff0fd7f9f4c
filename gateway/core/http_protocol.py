"""The HTTP/1.1 protocol `gateway serve` runs: uvicorn's httptools protocol with a cap on the
request head.

httptools (llhttp) has no limit on the request line and headers: a 16 MB header is buffered
whole and handed to the app. This protocol counts the bytes of a request's head while they
arrive, before the parser sees them; once the head passes `GATEWAY_MAX_HEADER_BYTES` (whether
it ends in this read or not), it answers 431 with the JSON error body and closes the
connection, so at most the cap plus one read (≤ 256 KiB) of a head is ever buffered and the app
never sees the request. The close lingers (as nginx's): the answer goes out with a FIN, and
what the client still sends is read and dropped for up to `LINGER_S`; closing at once with
unread bytes would reset the connection, and a reset can destroy the 431 before the client has
read it. Selected with
`uvicorn.run(http="gateway.core.http_protocol:HeadLimitedHttpToolsProtocol")`; under another
server the body-limit middleware answers the same 431 from the parsed headers. A request the
parser refuses gets uvicorn's 400 with the JSON error body (not its plain-text page).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.core.body_limit import error_response, header_message
from gateway.core.config import get_settings

PROTOCOL = "gateway.core.http_protocol:HeadLimitedHttpToolsProtocol"
LINGER_S = 2.0
"""After a 431, how long the connection still reads (and drops) the client's bytes."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = get_settings().max_header_bytes
        self.head_bytes = 0
        self.reading_head = True
        self.refused = False
        self.tail = b""
        """The last bytes of the head read so far (its end may straddle two reads)."""

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.reading_head:
            # Checked before parsing: a head over the cap is refused even when it ends in this
            # read (a loaded host reads a whole request at once), so the app never sees it.
            window = self.tail + data
            end = window.find(b"\r\n\r\n")
            in_head = len(data) if end < 0 else max(0, end + 4 - len(self.tail))
            if self.head_bytes + in_head > self.max_head_bytes:
                self.refuse_head()
                return
            self.head_bytes += len(data)
            self.tail = window[-3:]
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_head = True
        self.head_bytes = 0
        self.tail = b""

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (a malformed head, both framings): uvicorn's 400, with
        the JSON error body every other error has instead of its plain-text page."""
        headers, body = error_response("invalid_http_request", "Invalid HTTP request received.")
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()

    def refuse_head(self) -> None:
        """431 and close: the rest of this connection's bytes are never parsed."""
        self.refused = True
        headers, body = error_response("headers_too_large", header_message(self.max_head_bytes))
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then FIN; the client's EOF closes it
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
