"""The WebSocket handshake under `gateway serve` (its own protocol, `gateway.core.ws_protocol`):
a refusal below the app is the JSON error body and never quotes the request, where a browser's
credential travels (`Sec-WebSocket-Protocol: agent-gateway, bearer.<token>`); and not even
debug logging writes a credential, a prompt or an answer without `GATEWAY_LOG_PROMPTS`."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import _truncate
from tests.faults.processes import GatewayProcess, seed

pytestmark = pytest.mark.faults


def handshake(port: int, protocols: bytes) -> bytes:
    """A raw handshake offering `protocols`; the whole answer (the server closes after it)."""
    request = (
        b"GET /v1/agents/assistant/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + protocols + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_bad_handshake_is_json_and_no_credential_is_echoed_or_logged(
    postgres_url: str, mock_llm_base_url: str, tmp_path: Path
) -> None:
    asyncio.run(_truncate(postgres_url))
    gateway = GatewayProcess(
        postgres_url,
        tmp_path / "gateway.log",
        OPENAI_BASE_URL=mock_llm_base_url,
        GATEWAY_UPSTREAM_API="chat_completions",
        GATEWAY_LOG_LEVEL="debug",
    )
    try:
        headers = seed(gateway.url)
        key = headers["Authorization"].removeprefix("Bearer ").encode()
        for protocols in (
            b"agent-gateway, bearer." + key + b" x",  # not a token list
            b"agent-gateway, bearer." + key + b"\xe9",  # a byte that is not ASCII
            b"agent-gateway, bearer." + key + b";",
        ):
            answer = handshake(gateway.port, protocols)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), answer
            assert b"content-type: application/json" in head.lower(), answer
            assert orjson.loads(body)["error"]["code"] == "invalid_handshake"
            assert key not in answer

        async def refused() -> None:
            url = gateway.url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
            offered: list = ["agent-gateway", "bearer.gw_not_a_real_key"]  # type: ignore[type-arg]
            with pytest.raises(InvalidStatus) as refusal:
                async with connect(url, subprotocols=offered):
                    pass
            assert refusal.value.response.status_code == 401  # the app's own refusal
            body = orjson.loads(refusal.value.response.body or b"")
            assert body["error"]["type"] == "authentication_error"

        asyncio.run(refused())

        async def one_turn() -> None:
            url = gateway.url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
            offered: list = ["agent-gateway", "bearer." + key.decode()]  # type: ignore[type-arg]
            async with connect(url, subprotocols=offered, additional_headers=headers) as ws:
                await ws.send(orjson.dumps({"input": "a secret prompt"}).decode())
                while orjson.loads(await ws.recv())["event"] != "run.completed":
                    pass

        asyncio.run(one_turn())
        assert gateway.url  # still serving after the refusals
    finally:
        gateway.stop(signal.SIGTERM)
    log = gateway.log()
    assert '"level":"debug"' in log  # debug logging was on
    assert key.decode() not in log
    assert "a secret prompt" not in log
    assert "Logging error" not in log
