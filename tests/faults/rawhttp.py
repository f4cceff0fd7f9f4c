"""HTTP/1.1 at the byte level, for the framing a client library would not send (chunked bodies
over the cap, oversized heads), against a real server process."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(
    base_url: str, head: bytes, chunks: Iterable[bytes] = (), timeout_s: float = 15
) -> RawResponse:
    """Send `head` then `chunks` (from a thread, so that an answer the server gives before the
    whole request is sent is read while the sending goes on); the server's response."""
    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)

    def write() -> None:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before reading it all: expected

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return RawResponse(response.status, dict(response.getheaders()), body)
    finally:
        sock.close()
        writer.join(timeout=timeout_s)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway.test"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 16 * 1024) -> list[bytes]:
    """`body` in the chunked transfer coding."""
    out = [
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]
    return [*out, b"0\r\n\r\n"]
