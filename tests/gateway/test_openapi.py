"""The OpenAPI schema documents the errors the gateway really answers, in the body it really
sends (the OpenAI error shape, not FastAPI's `{"detail": ...}`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.core.openapi import ErrorResponse
from tests.gateway.conftest import ADMIN, Gateway, gateway_for

RUN = "/v1/agents/assistant/runs"


@pytest.fixture
async def gw(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url, upstream_max_retries=0):
        yield gateway


def operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The documented operation a concrete request path falls under."""
    for template, operations in schema["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path) and method.lower() in operations:
            found: dict[str, Any] = operations[method.lower()]
            return found
    raise AssertionError(f"{method} {path} is not documented")


def assert_documented(schema: dict[str, Any], response: httpx.Response) -> None:
    """The response's status is documented for its operation, with the error body schema
    (and Retry-After on a 429), and the body validates against that schema."""
    request = response.request
    documented = operation(schema, request.method, request.url.path)["responses"]
    status = str(response.status_code)
    assert status in documented, (request.method, request.url.path, status, sorted(documented))
    content = documented[status]["content"]["application/json"]["schema"]
    assert content == {"$ref": "#/components/schemas/ErrorResponse"}
    ErrorResponse.model_validate(response.json())
    if response.status_code == 429:
        assert "Retry-After" in documented[status]["headers"]
        assert int(response.headers["retry-after"]) >= 1


async def test_every_operation_documents_the_error_body(gw: Gateway) -> None:
    schema = (await gw.client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        if not path.startswith(("/v1", "/admin")):
            continue
        for method, op in operations.items():
            for status in ("401", "422", "429", "503"):  # 503: the database or Redis
                response = op["responses"].get(status)
                assert response is not None, (method, path, status)
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, status)


async def test_real_errors_are_documented_where_they_happen(gw: Gateway) -> None:
    schema = (await gw.client.get("/openapi.json")).json()
    c = gw.client
    tenant = await gw.create_tenant("acme")
    limited = await gw.create_tenant("limited")
    r = await c.patch(
        f"/admin/tenants/{limited.id}", json={"limits": {"requests_per_minute": 1}}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    h = tenant.headers
    responses = [
        await c.post(RUN, json={"input": "hi"}),  # 401
        await c.post(
            RUN, content=b"\xff", headers={**h, "Content-Type": "application/json"}
        ),  # 422
        await c.post(RUN, json={"input": ""}, headers=h),  # 422
        await c.post("/v1/agents/nobody/runs", json={"input": "hi"}, headers=h),  # 404
        await c.post(RUN, json={"input": "hi [[fault:500]]"}, headers=h),  # 502
        await c.post("/v1/chat/completions", json={"model": "x", "messages": []}, headers=h),
        await c.get("/v1/conversations/conv_missing", headers=h),  # 404
        await c.get("/v1/usage?group_by=nope", headers=h),  # 422
        await c.post("/admin/tenants", json={"slug": "acme", "name": "again"}, headers=ADMIN),
        await c.get("/admin/tenants/ten_missing", headers=ADMIN),  # 404
        await c.post("/admin/login", json={"username": "nobody", "password": "wrong-pass"}),
    ]
    for _ in range(2):  # the second is over the limit: 429
        responses.append(await c.get("/v1/agents", headers=limited.headers))
    statuses = sorted({r.status_code for r in responses if r.status_code >= 400})
    assert statuses == [401, 404, 409, 422, 429, 502], statuses
    assert responses[1].json()["error"]["code"] == "invalid_json"  # bad UTF-8
    for response in responses:
        if response.status_code >= 400:
            assert_documented(schema, response)
    # A malformed JSON body names itself.
    r = await c.post(RUN, content=b"{nope", headers={**h, "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_json")


async def test_run_and_chat_answers_are_described(gw: Gateway) -> None:
    """Generated clients get types for a run and a completion, and learn that the same routes
    stream; the answers really have the documented shape."""
    from gateway.runs.responses import ChatCompletion, RunObject

    schema = (await gw.client.get("/openapi.json")).json()
    for method, path, model in (
        ("post", "/v1/agents/{name}/runs", "RunObject"),
        ("post", "/v1/runs/{run_id}/actions", "RunObject"),
        ("get", "/v1/runs/{run_id}", "RunObject"),
        ("post", "/v1/chat/completions", "ChatCompletion"),
    ):
        content = schema["paths"][path][method]["responses"]["200"]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith(f"/{model}"), path
        assert ("text/event-stream" in content) is (method == "post"), path
    tenant = await gw.create_tenant("described")
    r = await gw.client.post(RUN, json={"input": "hi"}, headers=tenant.headers)
    run = RunObject.model_validate(r.json(), strict=True)
    assert set(r.json()) <= set(RunObject.model_fields)
    assert (run.object, run.status, run.usage.requests) == ("agent.run", "completed", 1)
    chat = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
    r = await gw.client.post("/v1/chat/completions", json=chat, headers=tenant.headers)
    completion = ChatCompletion.model_validate(r.json(), strict=True)
    assert set(r.json()) <= set(ChatCompletion.model_fields)
    assert completion.usage.total_tokens == run.usage.total_tokens


async def test_the_schema_stands_on_its_own(gw: Gateway) -> None:
    """Descriptions explain themselves: no citation of a document the reader does not have."""
    text = (await gw.client.get("/openapi.json")).text
    assert "SPEC" not in text and "§" not in text


async def test_every_link_names_an_operation(gw: Gateway) -> None:
    """The OpenAPI links (where a created resource's id leads) point at real operations."""
    schema = (await gw.client.get("/openapi.json")).json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    links = [
        link
        for path in schema["paths"].values()
        for op in path.values()
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 11
    assert {link["operationId"] for link in links} <= operations


async def test_a_405_allows_every_method_of_the_path(gw: Gateway) -> None:
    """GET and DELETE of one resource are two routes: the 405 names both."""
    r = await gw.client.request("OPTIONS", "/admin/tenants/ten_x", headers=ADMIN)
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert r.json()["error"]["code"] == "method_not_allowed"


async def test_operations_declare_the_credentials_they_take(gw: Gateway) -> None:
    """Generated clients and Swagger UI's Authorize learn which credential each route takes:
    tenant credentials (bearer, or `X-API-Key`) on `/v1`, admin ones on `/admin` (a bearer,
    or an admin user's login), none on the login, health and metrics routes."""
    schema = (await gw.client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tenantApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A tenant API key (`gw_…`).",
    }
    assert schemes["adminLogin"]["flows"]["password"]["tokenUrl"] == "/admin/login"
    seen = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            security = {name for entry in operation.get("security", []) for name in entry}
            if path.startswith("/v1/"):
                assert security == {"tenantBearer", "tenantApiKey"}, (method, path)
            elif path.startswith("/admin") and path != "/admin/login":
                assert security == {"adminBearer", "adminLogin"}, (method, path)
            else:
                assert security == set(), (method, path)
            seen.add(path)
    assert {"/v1/agents", "/admin/tenants", "/admin/login", "/healthz"} <= seen
    # Every operation that declares a credential refuses a request without one.
    r = await gw.client.get("/v1/agents")
    assert r.status_code == 401
    r = await gw.client.get("/admin/tenants")
    assert r.status_code == 401
