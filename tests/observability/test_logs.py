"""JSON logs: one access line per request, the request id on every line, no secrets or prompts."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest

from observability.logs import logging_config
from tests.gateway.conftest import ADMIN, gateway_for
from tests.tools.mcp_server import mcp_server
from tests.tools.test_mcp import mcp_agent

PROMPT = "my secret prompt about zebras"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The gateway's logging config, writing to a buffer instead of stderr."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    config = logging_config("debug")
    buffer = io.StringIO()
    config["handlers"]["stderr"]["stream"] = buffer
    logging.config.dictConfig(config)
    yield buffer
    for handler in root.handlers:
        root.removeHandler(handler)
    root.setLevel(saved[0])
    for handler in saved[1]:
        root.addHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_access_line_and_request_id_on_every_line(
    sqlite_url: str, mock_llm_base_url: str, json_logs: io.StringIO, log_prompts: bool
) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, log_prompts=log_prompts):
        tenant = await gw.create_tenant("logged")
        json_logs.truncate(0)
        json_logs.seek(0)
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": f"{PROMPT}: what is 2+2? use the calculator"},
            headers={**tenant.headers, "X-Request-ID": "req-logs-1"},
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-logs-1"
        usage = r.json()["usage"]
        records = lines(json_logs)
    mine = [line for line in records if line.get("request_id") == "req-logs-1"]
    access = [line for line in mine if line["logger"] == "gateway.access"]
    assert len(access) == 1
    assert access[0] | {"latency_ms": 0, "ts": "", "pid": 0} == {
        "ts": "",
        "level": "info",
        "logger": "gateway.access",
        "msg": "request",
        "pid": 0,
        "request_id": "req-logs-1",
        "method": "POST",
        "route": "/v1/agents/{name}/runs",
        "status": 200,
        "latency_ms": 0,
        "tenant": "logged",
        "agent": "assistant",
        "tokens": usage["input_tokens"] + usage["output_tokens"],
    }
    # The span debug lines of the run were written during the request and carry its id.
    spans = [line for line in mine if line["logger"] == "gateway.tracing"]
    assert {"function", "agent"} <= {line["span_type"] for line in spans}
    assert all(line["tenant"] == "logged" and line["agent"] == "assistant" for line in spans)
    text = json_logs.getvalue()
    assert tenant.key not in text
    assert (PROMPT in text) is log_prompts
    # The model's answer too (a response span's text: it was never logged).
    assert (r.json()["output"] in text) is log_prompts


async def test_no_url_of_an_mcp_server_or_an_upstream_is_logged(
    sqlite_url: str, mock_llm_base_url: str, json_logs: io.StringIO
) -> None:
    """Hosted MCP servers (and some upstreams) take their credential in the URL: the HTTP
    clients' own request lines (`HTTP Request: POST <url>` at info) wrote it to the log."""
    secret = "mcp-credential-0123456789"
    with mcp_server() as crm:
        async for gw in gateway_for(
            sqlite_url,
            mock_llm_base_url,
            egress_allow="127.0.0.0/8",
            upstream_client="openai",  # the stock client: httpx2 logs its requests at info
            upstream_http_client="httpx",
        ):
            agent = mcp_agent(f"{crm.url}?key={secret}")
            tenant = await gw.create_tenant("quiet-urls", agent=agent)
            r = await gw.client.post(
                "/v1/agents/assistant/runs",
                json={"input": 'Use find_customer {"name": "ann"}'},
                headers=tenant.headers,
            )
            assert r.status_code == 200, r.text
            assert "customer ann" in r.json()["output"]
    text = json_logs.getvalue()
    assert secret not in text
    assert "HTTP Request:" not in text
    assert mock_llm_base_url not in text


def test_a_credential_in_a_websocket_path_is_not_logged(json_logs: io.StringIO) -> None:
    """uvicorn logs each WebSocket handshake with its raw path (as it does here): a client that
    put its key or JWT in the path or the query string must not find it in the log."""
    from tenants.api_key.keys import generate_key

    key = generate_key()
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"
    server = logging.getLogger("uvicorn.error")
    for path in (f"/v1/agents/{key}/ws", f"/v1/agents/a/ws?api_key={key}", f"/v1/agents/{jwt}/ws"):
        server.info('%s - "WebSocket %s" %d', "127.0.0.1:50000", path, 401)
    text = json_logs.getvalue()
    assert key not in text and jwt not in text and "signature" not in text
    assert "WebSocket /v1/agents/…/ws" in text
    assert "/v1/agents/a/ws?…" in text


async def test_a_request_refused_before_its_run_starts_still_names_its_agent(
    sqlite_url: str, mock_llm_base_url: str, json_logs: io.StringIO
) -> None:
    """A 422 body, a 429 at admission, a Chat Completions refusal and a request-limit 429 (made
    before the agent is looked up): the access line names the agent the request was for (it
    was null)."""
    async for gw in gateway_for(sqlite_url, mock_llm_base_url):
        tenant = await gw.create_tenant("refused-logged")
        r = await gw.client.patch(
            f"/admin/tenants/{tenant.id}",
            json={"limits": {"tokens_per_minute": 10, "requests_per_minute": 3}},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        json_logs.truncate(0)
        json_logs.seek(0)
        sent = {
            "req-bad-body": ("/v1/agents/assistant/runs", {"inputs": "x"}, 422),
            "req-too-big": ("/v1/agents/assistant/runs", {"input": "hello"}, 429),
            "req-chat": (
                "/v1/chat/completions",
                {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]},
                429,
            ),
            "req-rpm": ("/v1/agents/assistant/runs", {"input": "hello"}, 429),
        }
        for request_id, (path, body, status) in sent.items():
            r = await gw.client.post(
                path, json=body, headers={**tenant.headers, "X-Request-ID": request_id}
            )
            assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == "requests_per_minute", r.text
        records = lines(json_logs)
    for request_id in sent:
        access = [
            line
            for line in records
            if line.get("request_id") == request_id and line["logger"] == "gateway.access"
        ]
        assert len(access) == 1, request_id
        assert access[0]["agent"] == "assistant", access[0]
        assert access[0]["tenant"] == "refused-logged", access[0]
