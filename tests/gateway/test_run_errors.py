"""Run errors a client sees: bad input, unknown agents, upstream trouble, turn limits.

Every one is the OpenAI-shaped JSON error body, and the tokens already spent are recorded.
"""

from __future__ import annotations

import pytest

from tests.gateway.conftest import ADMIN, AGENT_SPEC, Gateway, Tenant, gateway_for

RUN = "/v1/agents/assistant/runs"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": ""},
        {"input": 5},
        {"input": []},
        {"input": [{"role": "tool", "content": "x"}]},
        {"input": "hi", "unexpected": True},
        {"input": "hi", "metadata": {f"k{i}": "v" for i in range(17)}},
        {"input": "hi", "metadata": {"k": {"nested": 1}}},
        {"input": "x" * 100_001},
        {"input": "hi", "stream": "yes"},
        {"input": "hi", "stream": 1},
    ],
)
async def test_invalid_run_bodies_are_422(
    gateway: Gateway, tenant: Tenant, body: dict[str, object]
) -> None:
    r = await gateway.client.post(RUN, json=body, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


async def test_malformed_json_is_an_invalid_request(gateway: Gateway, tenant: Tenant) -> None:
    r = await gateway.client.post(
        RUN, content=b"{not json", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", [RUN, "/v1/chat/completions"])
async def test_an_empty_json_body_says_it_is_empty(
    gateway: Gateway, tenant: Tenant, path: str
) -> None:
    # It said "Field required" with `param: null`: no field of the body was named.
    r = await gateway.client.post(
        path, content=b"", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_json" and "empty" in error["message"], error


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"],
)
async def test_a_body_sent_as_another_type_says_to_send_json(
    gateway: Gateway, tenant: Tenant, content_type: str
) -> None:
    # `curl -d '{"input": "hi"}'` sends a form type: the error names the Content-Type (it
    # said "Input should be a valid dictionary").
    for path, body in ((RUN, b'{"input": "hi"}'), ("/v1/conversations", b"{}")):
        r = await gateway.client.post(
            path, content=body, headers={**tenant.headers, "Content-Type": content_type}
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_json", error
        assert "Content-Type" in error["message"] and content_type in error["message"]
    # No Content-Type at all: said so.
    r = await gateway.client.post(RUN, content=b'{"input": "hi"}', headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json", r.text
    assert "the Content-Type is missing" in r.json()["error"]["message"]
    # The JSON types, with parameters or a +json suffix, are read as JSON.
    for json_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = await gateway.client.post(
            "/v1/conversations",
            content=b"{}",
            headers={**tenant.headers, "Content-Type": json_type},
        )
        assert r.status_code == 201, (json_type, r.text)


async def test_a_text_over_its_length_is_counted_in_characters(
    gateway: Gateway, tenant: Tenant
) -> None:
    r = await gateway.client.post(RUN, json={"input": "x" * 100_001}, headers=tenant.headers)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "input: Text should have at most 100000 characters, not 100001"
    )


async def test_unknown_agent_and_bad_name(gateway: Gateway, tenant: Tenant) -> None:
    r = await gateway.client.post(
        "/v1/agents/nope/runs", json={"input": "hi"}, headers=tenant.headers
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "agent_not_found"
    # A name no agent can have is an unknown agent too (as a malformed conversation or run id
    # is an unknown conversation or run): 404, never a 422 that tells names apart.
    for bad in ("Bad%20Name", "x" * 65, "x" * 300, "%E2%98%83"):
        r = await gateway.client.post(
            f"/v1/agents/{bad}/runs", json={"input": "hi"}, headers=tenant.headers
        )
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["error"]["code"] == "agent_not_found"
    for bad in ("xyz", "run_", "run_with-dash", "run_" + "a" * 300, "run_%E2%98%83"):
        r = await gateway.client.get(f"/v1/runs/{bad}", headers=tenant.headers)
        assert r.status_code == 404, (bad, r.text)
        assert r.json()["error"]["code"] == "run_not_found"
        r = await gateway.client.post(
            f"/v1/runs/{bad}/actions",
            json={"decisions": [{"id": "x", "approve": True}]},
            headers=tenant.headers,
        )
        assert r.status_code == 404, (bad, r.text)


async def test_unknown_conversation_is_404(gateway: Gateway, tenant: Tenant) -> None:
    r = await gateway.client.post(
        RUN, json={"input": "hi", "conversation_id": "conv_123"}, headers=tenant.headers
    )
    assert r.status_code == 404


async def test_body_over_the_limit_is_413_json(gateway: Gateway, tenant: Tenant) -> None:
    limit = gateway.app.state.settings.max_body_bytes
    r = await gateway.client.post(
        RUN,
        content=b'{"input": "' + b"a" * limit + b'"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"


async def test_upstream_timeout_is_504_and_recorded(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, upstream_timeout_s=0.3, upstream_max_retries=0
    ):
        tenant = await gw.create_tenant("timeouts")
        r = await gw.client.post(
            RUN, json={"input": "hi [[fault:timeout]]"}, headers=tenant.headers
        )
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "upstream_timeout"
        await gw.flush_usage()
        r = await gw.client.get(f"/admin/tenants/{tenant.id}/usage", headers=ADMIN)
        assert r.json()["totals"]["runs"] == 1


async def test_upstream_errors_are_retried_then_502(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, upstream_max_retries=1):
        tenant = await gw.create_tenant("retries")
        text = "hi [[fault:500]]"
        before = len(gw.mock_ledger(text))
        r = await gw.client.post(RUN, json={"input": text}, headers=tenant.headers)
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "upstream_500"
        assert len(gw.mock_ledger(text)) == before  # failures report no usage


@pytest.mark.parametrize(
    ("marker", "retry_after"),
    [
        ("[[fault:429]] [[retry-after:30]]", "30"),  # the upstream's own delay, passed on
        ("[[fault:429]]", "1"),  # `retry-after: 0`: at least a second
        ("[[fault:503]] [[retry-after:7]]", "7"),
        ("[[fault:503]]", "1"),  # an overloaded upstream that named no delay
        ("[[fault:500]]", None),  # nothing to wait for
    ],
)
async def test_an_upstream_that_refused_passes_its_retry_after_on(
    sqlite_url: str, mock_llm_base_url: str, marker: str, retry_after: str | None
) -> None:
    """A client retrying a 502 for an upstream 429/503 (the openai client does) waits as long
    as the upstream asked, not at once; plain runs and Chat Completions alike."""
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, upstream_max_retries=0):
        tenant = await gw.create_tenant("upstream-refusals")
        code = "upstream_" + marker[8:11]
        for path, body in (
            (RUN, {"input": f"hi {marker}"}),
            (
                "/v1/chat/completions",
                {"model": "assistant", "messages": [{"role": "user", "content": f"hi {marker}"}]},
            ),
        ):
            r = await gw.client.post(path, json=body, headers=tenant.headers)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == code
            assert r.headers.get("retry-after") == retry_after, (path, marker)


async def test_turn_limit_is_a_clear_error_and_spent_tokens_are_recorded(
    gateway: Gateway,
) -> None:
    tenant = await gateway.create_tenant("loops", agent={**AGENT_SPEC, "max_turns": 1})
    text = "Use the calculator for 2+2"
    before = len(gateway.mock_ledger(text))
    r = await gateway.client.post(RUN, json={"input": text}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "max_turns_exceeded"
    calls = gateway.mock_ledger(text)[before:]
    assert len(calls) == 1
    await gateway.flush_usage()
    r = await gateway.client.get(f"/admin/tenants/{tenant.id}/usage", headers=ADMIN)
    totals = r.json()["totals"]
    assert totals["runs"] == 1
    assert totals["input_tokens"] == calls[0]["input_tokens"]
    assert totals["output_tokens"] == calls[0]["output_tokens"]


async def test_an_over_long_conversation_id_or_model_is_404(
    gateway: Gateway, tenant: Tenant
) -> None:
    long = "conv_" + "a" * 300
    for method in ("GET", "DELETE"):
        r = await gateway.client.request(
            method, f"/v1/conversations/{long}", headers=tenant.headers
        )
        assert r.status_code == 404, r.text
    r = await gateway.client.get(f"/v1/conversations/{long}/items", headers=tenant.headers)
    assert r.status_code == 404, r.text
    r = await gateway.client.get("/v1/models/" + "m" * 300, headers=tenant.headers)
    assert r.status_code == 404, r.text


async def test_a_trailing_slash_is_a_json_404_not_a_redirect(
    gateway: Gateway, tenant: Tenant
) -> None:
    """Starlette's default answered `/v1/agents/` with a bare 307 to a URL built from the Host
    header; a path with a trailing slash is an unknown path, in the error shape."""
    for method, path in (
        ("GET", "/v1/agents/"),
        ("POST", "/v1/agents/assistant/runs/"),
        ("POST", "/admin/tenants/"),
    ):
        r = await gateway.client.request(
            method, path, headers={**tenant.headers, "Host": "evil.example"}, json={}
        )
        assert r.status_code == 404, (path, r.status_code, r.headers)
        assert "location" not in r.headers
        assert r.json()["error"]["type"] == "not_found_error"
