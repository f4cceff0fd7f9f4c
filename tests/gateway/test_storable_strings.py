"""Strings the database cannot store never get in: NUL, control characters in labels and lone
surrogates are a 422 naming the field, on every input that reaches a row."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gateway.core.db import Database
from tests.gateway.conftest import ADMIN, AGENT_SPEC, Gateway, gateway_for

RUN = "/v1/agents/assistant/runs"


@pytest.fixture
async def gw(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    """SQLite and PostgreSQL: PostgreSQL is where NUL used to break the usage writer."""
    async for gateway in gateway_for(database_url, mock_llm_base_url, upstream_max_retries=0):
        yield gateway


@pytest.fixture
async def sqlite_gw(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url):
        yield gateway


async def _usage_rows(gw: Gateway) -> list[dict[str, Any]]:
    db: Database = gw.app.state.db
    async with db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT tenant_id, model, status FROM usage_records"))
        return [dict(row._mapping) for row in rows]


async def test_nul_in_the_agent_model_is_422_and_usage_keeps_flowing(gw: Gateway) -> None:
    """The case of the report: `"model": "gpt\\u0000"` used to be stored (201) and then fail
    every usage batch on PostgreSQL."""
    acme = await gw.create_tenant("acme")
    r = await gw.client.put(
        f"/admin/tenants/{acme.id}/agents/assistant",
        content=b'{"model": "gpt\\u0000", "instructions": "Be brief."}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "control characters" in error["message"]
    # The agent kept its stored spec, and its runs are recorded.
    agent = (
        await gw.client.get(f"/admin/tenants/{acme.id}/agents/assistant", headers=ADMIN)
    ).json()
    assert agent["spec"]["model"] == AGENT_SPEC["model"]
    r = await gw.client.post(RUN, json={"input": "hi"}, headers=acme.headers)
    assert r.status_code == 200, r.text
    await gw.flush_usage()
    assert await _usage_rows(gw) == [
        {"tenant_id": acme.id, "model": AGENT_SPEC["model"], "status": "completed"}
    ]


def _refused_bodies(tenant_id: str) -> Iterator[tuple[str, str, dict[str, Any], str | None]]:
    """(method, path, body, param) of requests carrying a string that must be refused."""
    agent = f"/admin/tenants/{tenant_id}/agents/other"
    spec = {"instructions": "x"}
    yield "POST", "/admin/tenants", {"slug": "nul-tenant", "name": "a\x00b"}, "name"
    yield "PATCH", f"/admin/tenants/{tenant_id}", {"name": "a\tb"}, "name"
    # C1 controls too: U+009B is a terminal's CSI, U+0085 a line break to some readers.
    yield "PATCH", f"/admin/tenants/{tenant_id}", {"name": "a\x9b2Jb"}, "name"
    yield "POST", f"/admin/tenants/{tenant_id}/keys", {"name": "k\x85"}, "name"
    yield "POST", f"/admin/tenants/{tenant_id}/keys", {"name": "k\x00"}, "name"
    yield "PUT", agent, {**spec, "model": "gpt\x00"}, "model"
    yield "PUT", agent, {**spec, "model": "gpt\n4"}, "model"
    # A lone surrogate is not even valid JSON text for the body parser: 422 `invalid_json`.
    yield "PUT", agent, {**spec, "model": "gpt\ud800"}, None
    yield "PUT", agent, {"instructions": "Be\x00 brief."}, "instructions"
    yield "PUT", agent, {**spec, "description": "\x00"}, "description"
    yield "PUT", agent, {**spec, "tools": ["calculator\x00"]}, "tools"
    jwt = f"/admin/tenants/{tenant_id}/jwt"
    yield "PUT", jwt, {"mode": "hs256", "issuer": "iss\x00"}, "issuer"
    yield "PUT", jwt, {"mode": "rs256", "issuer": "i", "public_key": "\x00"}, "public_key"
    yield "PUT", jwt, {"mode": "rs256", "issuer": "i", "jwks": {"keys": [{"n": "\x00"}]}}, "jwks"


def _refused_tenant_bodies() -> Iterator[tuple[str, str, dict[str, Any], str | None]]:
    yield "POST", RUN, {"input": "a\x00b"}, "input"
    yield "POST", RUN, {"input": [{"role": "user", "content": "\x00"}]}, "input"
    yield "POST", RUN, {"input": "hi", "metadata": {"k\x00": "v"}}, "metadata"
    yield "POST", RUN, {"input": "hi", "metadata": {"k": "v\x00"}}, "metadata"
    yield "POST", RUN, {"input": "hi", "metadata": {"k": "v\ud800"}}, None
    yield "POST", RUN, {"input": "hi", "conversation_id": "conv_\x00"}, "conversation_id"
    yield "POST", "/v1/conversations", {"metadata": {"\x7f": "v"}}, "metadata"
    chat = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}
    yield "POST", "/v1/chat/completions", {**chat, "user": "u\x00"}, "user"
    yield "POST", "/v1/chat/completions", {**chat, "user": "u\x9b31m"}, "user"
    yield "POST", "/v1/chat/completions", {**chat, "metadata": {"k": "\x00"}}, "metadata"
    bad_message = [{"role": "user", "content": [{"type": "text", "text": "\x00"}]}]
    yield (
        "POST",
        "/v1/chat/completions",
        {**chat, "messages": bad_message},
        "messages.0.content.0.text",
    )


def _raw_json(body: dict[str, Any]) -> bytes:
    # ensure_ascii: a lone surrogate travels as the `\ud800` escape a client would send.
    return json.dumps(body, ensure_ascii=True).encode()


async def test_every_unstorable_string_is_a_422_naming_its_field(gw: Gateway) -> None:
    acme = await gw.create_tenant("acme")
    cases = [(*case, ADMIN) for case in _refused_bodies(acme.id)]
    cases += [(*case, acme.headers) for case in _refused_tenant_bodies()]
    seen = {}
    for method, path, body, _, headers in cases:
        r = await gw.client.request(
            method,
            path,
            content=_raw_json(body),
            headers={**headers, "Content-Type": "application/json"},
        )
        error = r.json()["error"]
        # The union `input` is named with its member (e.g. `input.constrained-str`).
        named = "input" if (error["param"] or "").startswith("input") else error["param"]
        seen[(path, json.dumps(body))] = (r.status_code, named)
        assert error["type"] == "invalid_request_error", r.text
    expected = {(path, json.dumps(body)): (422, param) for _, path, body, param, _ in cases}
    assert seen == expected
    # None of them reached a row: the one tenant, its key and its agent are all there is.
    tenants = (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
    assert [t["slug"] for t in tenants] == ["acme"]
    await gw.flush_usage()
    assert await _usage_rows(gw) == []


async def test_free_text_keeps_tabs_and_newlines(gw: Gateway) -> None:
    acme = await gw.create_tenant("acme")
    instructions = "Be brief.\n\tAlways.\r\nForm\x0cfeed and \x1b[1mbold\x1b[0m are kept."
    r = await gw.client.put(
        f"/admin/tenants/{acme.id}/agents/assistant",
        json={**AGENT_SPEC, "instructions": instructions, "description": "two\nlines"},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["instructions"] == instructions
    r = await gw.client.post(
        RUN,
        json={"input": "line one\nline\ttwo", "metadata": {"note": "a\tb\nc"}},
        headers=acme.headers,
    )
    assert r.status_code == 200, r.text


async def test_an_issuer_with_nul_is_the_bad_credential_401(gw: Gateway) -> None:
    """The unverified `iss` names the config to look up: NUL in it used to reach PostgreSQL
    (500) before any signature check."""
    await gw.create_tenant("acme")

    def segment(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header, claims = segment({"alg": "HS256", "typ": "JWT"}), segment({"iss": "a\x00", "sub": "u"})
    token = f"{header}.{claims}.x"
    transport = httpx.ASGITransport(app=gw.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        r = await client.get("/v1/agents", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text


def _string_leaves(
    schema: dict[str, Any], components: dict[str, Any], path: str, seen: frozenset[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from _string_leaves(components[name], components, path, seen | {name})
        return
    for key in ("anyOf", "oneOf", "allOf"):
        members = schema.get(key, [])
        # A decimal (number, or its string form) is parsed as a number: no text is stored.
        decimal = {m.get("type") for m in members} >= {"number", "string"}
        for member in members:
            if not (decimal and member.get("type") == "string"):
                yield from _string_leaves(member, components, path, seen)
    if schema.get("type") == "string":
        yield path, schema
    for name, member in schema.get("properties", {}).items():
        yield from _string_leaves(member, components, f"{path}.{name}", seen)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _string_leaves(extra, components, f"{path}.*", seen)
    if isinstance(schema.get("items"), dict):
        yield from _string_leaves(schema["items"], components, f"{path}[]", seen)


def _refuses_nul(schema: dict[str, Any]) -> bool:
    if "enum" in schema or "const" in schema or schema.get("format") == "date-time":
        return True
    pattern = schema.get("pattern")
    return pattern is not None and re.search(pattern, "a\x00b") is None


async def test_every_json_body_string_says_it_refuses_nul(sqlite_gw: Gateway) -> None:
    """What the code refuses, the schema says: every string field of every JSON request body
    carries a pattern (or enum, format) that NUL cannot match. A new field without one fails
    here: give it `gateway.core.text.Label` or `Text`."""
    document = (await sqlite_gw.client.get("/openapi.json")).json()
    components = document["components"]["schemas"]
    unguarded = []
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                if media != "application/json":
                    continue
                for where, leaf in _string_leaves(body["schema"], components, "body", frozenset()):
                    if not _refuses_nul(leaf):
                        unguarded.append(f"{method.upper()} {route} {where}")
    assert unguarded == []


def _parameter_requests(document: dict[str, Any]) -> Iterator[tuple[str, str, str, int]]:
    """(method, url, param, status) with a NUL in one path or query parameter of every
    operation: 404 for a path parameter (nothing can be named so), 422 for a query one and
    for the name a PUT creates (an agent, an upstream, a model's price)."""
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            path_names = [p["name"] for p in parameters if p["in"] == "path"]
            for name in [p["name"] for p in parameters if p["in"] in ("path", "query")]:
                url = template
                for other in path_names:
                    url = url.replace("{" + other + "}", "x%00y" if other == name else "x")
                if name not in path_names:
                    url += f"?{name}=x%00y"
                created = method == "put" and name in ("name", "model")
                yield method.upper(), url, name, 404 if name in path_names and not created else 422


async def test_every_path_and_query_parameter_refuses_control_characters(
    sqlite_gw: Gateway,
) -> None:
    """Ids, names and cursors are looked up in the database: a control character in any of
    them is refused naming it, before authentication and before any look-up."""
    document = (await sqlite_gw.client.get("/openapi.json")).json()
    requests = list(_parameter_requests(document))
    assert len(requests) > 30  # every operation, not just a few
    for method, url, param, status in requests:
        r = await sqlite_gw.client.request(method, url)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (method, url)


async def test_a_websocket_path_with_a_control_character_is_refused(sqlite_gw: Gateway) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    tenant = await sqlite_gw.create_tenant("acme")
    client = TestClient(sqlite_gw.app)  # no `with`: the lifespan already runs
    url = "/v1/agents/a%00b/ws?x=%00"
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(url, headers=tenant.headers):
        pass
