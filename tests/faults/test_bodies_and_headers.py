"""Malformed and oversized requests against a real `gateway serve` process: every one gets a
clean JSON error (413, 422 `invalid_json`, 422 naming the parameter, 431), whatever its
framing, and the server keeps serving."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client

from tests.faults.rawhttp import chunked, request_head, send_raw
from tests.observability.live import ADMIN, LiveGateway, LiveTenant, serve_gateway

pytestmark = pytest.mark.faults

MAX_BODY = 1024 * 1024
RUN = "/v1/agents/assistant/runs"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, mock_llm_base_url: str
) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("bodies")
    db = tmp / "gateway.db"
    shutil.copy(sqlite_template, db)
    with serve_gateway(tmp, f"sqlite+aiosqlite:///{db}", mock_llm_base_url, workers=1) as gw:
        yield gw


@pytest.fixture(scope="module")
def tenant(live: LiveGateway) -> LiveTenant:
    return live.create_tenant("bodies")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, body
    error: dict[str, Any] = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    return error


def run_head(tenant: LiveTenant, **headers: str) -> bytes:
    return request_head(
        "POST",
        RUN,
        {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json", **headers},
    )


def test_a_chunked_body_over_the_cap_is_413(live: LiveGateway, tenant: LiveTenant) -> None:
    body = b'{"input": "' + b"x" * (MAX_BODY + 10) + b'"}'
    r = send_raw(live.base_url, run_head(tenant, **{"Transfer-Encoding": "chunked"}), chunked(body))
    error = assert_error(r.status, r.json(), 413, "body_too_large")
    assert str(MAX_BODY) in error["message"]
    # Under the cap, the same framing runs.
    small = b'{"input": "hello"}'
    r = send_raw(
        live.base_url,
        run_head(tenant, **{"Transfer-Encoding": "chunked", "Connection": "close"}),
        chunked(small, size=4),
    )
    assert r.status == 200, r.body
    assert r.json()["status"] == "completed"


def test_a_chunked_body_over_the_cap_is_413_on_routes_that_read_no_body(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    """The cap holds whatever the route does with the body: a route that never reads one
    (it would run its action and answer 200) or reads a form is 413 too, as with a declared
    `Content-Length`."""
    big = b'{"x": "' + b"y" * (MAX_BODY + 10) + b'"}'
    secret = f"/admin/tenants/{tenant.id}/tool-secret"
    for method, path, headers in (
        ("GET", "/v1/agents", {"Authorization": f"Bearer {tenant.key}"}),
        ("POST", secret, ADMIN),
        ("POST", "/admin/login", {"Content-Type": "application/x-www-form-urlencoded"}),
    ):
        head = request_head(method, path, {**headers, "Transfer-Encoding": "chunked"})
        r = send_raw(live.base_url, head, chunked(big))
        assert_error(r.status, r.json(), 413, "body_too_large")
    # The refused POST rotated nothing: the first secret is created now (201, not a rotation).
    r = httpx.post(live.base_url + secret, headers=ADMIN)
    assert r.status_code == 201, r.text


def test_a_declared_length_over_the_cap_is_413_before_the_body(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    head = run_head(tenant, **{"Content-Length": str(MAX_BODY + 1)})
    r = send_raw(live.base_url, head)  # no body sent: refused on the header alone
    assert_error(r.status, r.json(), 413, "body_too_large")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"input": "caf\xe9"}', "UTF-8"),
        (b"[" * 10_000 + b"]" * 10_000, "depth"),
        (b'{"input": [' + b"[" * 64 + b"]" * 64 + b"]}", "nested deeper than 64"),
        (b'{"input": "\\ud800"}', "surrogate"),
        (b'{"input": NaN}', "unexpected character"),
        (b'{"input": "x"', "unexpected end"),
        (b"", None),
    ],
)
def test_every_body_that_is_not_json_is_422_invalid_json(
    live: LiveGateway, tenant: LiveTenant, body: bytes, reason: str | None
) -> None:
    r = httpx.post(
        live.base_url + RUN,
        content=body,
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
    )
    if reason is None:  # no body at all: the body is missing, a validation error
        assert r.status_code == 422, r.text
        return
    error = assert_error(r.status_code, r.json(), 422, "invalid_json")
    assert reason in error["message"], error


def test_nesting_up_to_the_cap_is_accepted(live: LiveGateway, tenant: LiveTenant) -> None:
    """64 levels in all (the body object is the first): parsed, then refused by the schema."""
    body = b'{"input": ' + b"[" * 63 + b"]" * 63 + b"}"
    r = httpx.post(
        live.base_url + RUN,
        content=body,
        headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
    )
    error = assert_error(r.status_code, r.json(), 422, "invalid_value")
    assert error["param"].startswith("input")


def test_every_route_with_a_body_refuses_invalid_json_with_422(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    """Whoever adds a router: its bodies go through the same strict parsing, judged after the
    credential (no credential: 401, whatever the body)."""
    schema = httpx.get(live.base_url + "/openapi.json").json()
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if "application/json" not in operation.get("requestBody", {}).get("content", {}):
                continue
            url = live.base_url + path.replace("{", "").replace("}", "")
            credential = ADMIN if path.startswith("/admin") else tenant.headers
            for body in (b'{"a": "\xff"}', b"[" * 65 + b"]" * 65):
                json_type = {"Content-Type": "application/json"}
                r = httpx.request(method, url, content=body, headers={**json_type, **credential})
                unstrict = f"{method} {path}: its router needs route_class=JsonBodyRoute"
                assert r.status_code == 422, (unstrict, r.text)
                assert r.json()["error"]["code"] == "invalid_json", (unstrict, r.text)
                r = httpx.request(method, url, content=body, headers=json_type)
                assert r.status_code == 401, (f"{method} {path}: the body came first", r.text)
            checked += 1
    assert checked >= 8


def test_a_body_that_is_not_json_is_counted_and_limited_like_any_request(
    live: LiveGateway,
) -> None:
    limited = live.create_tenant("bad-json-limited", {"requests_per_minute": 2})
    headers = {**limited.headers, "Content-Type": "application/json"}
    for remaining in ("1", "0"):
        r = httpx.post(live.base_url + RUN, content=b"{not json", headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json", r.text
        assert r.headers["x-ratelimit-remaining-requests"] == remaining
    r = httpx.post(live.base_url + RUN, content=b"{not json", headers=headers)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "requests_per_minute"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (RUN, {"input": [{"role": "user", "content": "x"}] * 257}, "input"),
        (RUN, {"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        (RUN, {"input": ""}, "input"),
        (
            "/v1/chat/completions",
            {"model": "assistant", "messages": [{"role": "user", "content": "x"}] * 257},
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": "assistant", "messages": [{"role": "user", "content": [{"type": "x"}]}]},
            "messages.0.content.0.type",
        ),
    ],
)
def test_an_over_long_input_list_names_the_parameter_and_the_maximum(
    live: LiveGateway, tenant: LiveTenant, path: str, body: dict[str, Any], param: str
) -> None:
    r = httpx.post(live.base_url + path, json=body, headers=tenant.headers)
    error = assert_error(r.status_code, r.json(), 422, "invalid_value")
    assert error["param"] == param, error
    if len(body.get("input", body.get("messages", []))) == 257:
        assert "at most 256 items" in error["message"], error


def test_headers_over_64_kib_are_431_before_the_app(live: LiveGateway, tenant: LiveTenant) -> None:
    head = run_head(tenant, **{"X-Padding": "p" * (65 * 1024)})
    r = send_raw(live.base_url, head, [b'{"input": "hello"}'])
    error = assert_error(r.status, r.json(), 431, "headers_too_large")
    assert "65536" in error["message"]
    # Just under the cap: served.
    head = run_head(tenant, **{"X-Padding": "p" * (60 * 1024), "Connection": "close"})
    body = b'{"input": "hello"}'
    r = send_raw(
        live.base_url,
        head.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()),
        [body],
    )
    assert r.status == 200, r.body


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",  # no colon
        b"G\x01T /v1/agents HTTP/1.1\r\nHost: x\r\n\r\n",  # a control byte in the method
        b"POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",  # both framings (request smuggling)
    ],
)
def test_a_request_the_http_parser_refuses_is_400_in_the_json_shape(
    live: LiveGateway, head: bytes
) -> None:
    """Even a request that never reaches the app (the HTTP parser refuses it) is answered
    with the JSON error body, not the server's plain-text page."""
    r = send_raw(live.base_url, head)
    assert r.headers["content-type"] == "application/json"
    assert_error(r.status, r.json(), 400, "invalid_http_request")
    assert httpx.get(live.base_url + "/readyz").status_code == 200


def test_a_16_mb_header_is_refused_without_buffering_it(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    before = rss_kib(live.pid)
    started = time.monotonic()
    head = run_head(tenant).removesuffix(b"\r\n")
    padding = (b"X-Padding: " + b"p" * (16 * 1024 * 1024) + b"\r\n\r\n",)
    try:
        r = send_raw(live.base_url, head, padding)
        assert_error(r.status, r.json(), 431, "headers_too_large")
    except ConnectionResetError:
        pass  # the 431 was sent, then the connection reset on the unread rest: also refused
    assert time.monotonic() - started < 5
    assert rss_kib(live.pid) - before < 4 * 1024, "the header was buffered"
    r = httpx.get(live.base_url + "/readyz")
    assert r.status_code == 200


def test_a_websocket_frame_nested_too_deep_is_an_invalid_json_error(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    url = live.base_url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    with websockets.sync.client.connect(url, additional_headers=tenant.headers) as ws:
        ws.send('{"input": ' + "[" * 100 + "]" * 100 + "}")
        reply = ws.recv(timeout=10)
        assert '"invalid_json"' in str(reply), reply
        ws.send('{"input": "still open"}')
        events = []
        while not events or events[-1] not in ("run.completed", "run.failed"):
            frame = str(ws.recv(timeout=10))
            events.append(frame.split('"event":"')[1].split('"')[0])
        assert events[-1] == "run.completed"


def test_a_credential_in_a_websocket_query_string_never_reaches_the_log(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    # Browser WebSocket clients cannot set headers: a client may well try `?api_key=`. The
    # handshake is refused (401: credentials go in headers) and uvicorn's line about it must
    # not carry the key.
    ws_url = live.base_url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(f"{ws_url}?api_key={tenant.key}&x=1")
    assert refused.value.response.status_code == 401
    with websockets.sync.client.connect(
        f"{ws_url}?access_token={tenant.key}", additional_headers=tenant.headers
    ) as ws:
        ws.send('{"input": "hello"}')
        assert "run.created" in str(ws.recv(timeout=10))
    deadline = time.monotonic() + 5
    while "/v1/agents/assistant/ws?" not in live.log_path.read_text():
        assert time.monotonic() < deadline, "uvicorn never logged the handshakes"
        time.sleep(0.05)
    assert tenant.key not in live.log_path.read_text()


def test_an_integer_past_64_bits_is_refused_not_rounded(
    live: LiveGateway, tenant: LiveTenant
) -> None:
    # orjson reads such an integer as a float: metadata would come back altered.
    url = live.base_url + "/v1/conversations"
    headers = {**tenant.headers, "Content-Type": "application/json"}
    big = b'{"metadata": {"n": 123456789012345678901234567890}}'
    r = httpx.post(url, content=big, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json", r.text
    assert "64 bits" in r.json()["error"]["message"]
    kept = b'{"metadata": {"n": 18446744073709551615, "s": "123456789012345678901234567890"}}'
    r = httpx.post(url, content=kept, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == {
        "n": 18446744073709551615,
        "s": "123456789012345678901234567890",
    }
