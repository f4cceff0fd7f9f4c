"""PUT-time checks of handoffs, guardrails and output schemas (422 before anything is stored),
and the 409 on deleting an agent that others hand off to; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.tenants.conftest import AGENT_SPEC, MakeTenant

Admin = dict[str, str]


async def _put(
    client: httpx.AsyncClient, admin: Admin, tenant_id: str, name: str, **spec: Any
) -> httpx.Response:
    return await client.put(
        f"/admin/tenants/{tenant_id}/agents/{name}", json={**AGENT_SPEC, **spec}, headers=admin
    )


@pytest.mark.parametrize(
    ("spec", "param", "words"),
    [
        (
            {"guardrails": {"input": {"blocked_patterns": ["ok", "fine", r"(a)\1"]}}},
            "guardrails.input.blocked_patterns.2",
            "RE2",
        ),
        (
            {"guardrails": {"output": {"blocked_patterns": ["(?<=x)y"]}}},
            "guardrails.output.blocked_patterns.0",
            "lookarounds",
        ),
        (
            {"guardrails": {"input": {"blocked_patterns": ["(unclosed"]}}},
            "guardrails.input.blocked_patterns.0",
            "RE2",
        ),
        # Each compiles alone, but not as the one RE2 set the run matches (every run was a 500).
        (
            {"guardrails": {"input": {"blocked_patterns": [r"\p{L}{200}"]}}},
            "guardrails.input.blocked_patterns",
            "as one set",
        ),
        (
            {"guardrails": {"output": {"blocked_patterns": [r"\p{L}{100}", r"\p{L}{99}"]}}},
            "guardrails.output.blocked_patterns",
            "fewer or smaller patterns",
        ),
        ({"guardrails": {"input": {"max_chars": 0}}}, "guardrails.input.max_chars", ""),
        ({"guardrails": {"input": {"max_chars": True}}}, "guardrails.input.max_chars", "number"),
        ({"guardrails": {"input": {"max_chars": "10"}}}, "guardrails.input.max_chars", "number"),
        (
            {"guardrails": {"input": {"classifier": {"model": "m"}}}},
            "guardrails.input.classifier.instructions",
            "",
        ),
        ({"guardrails": {"inputs": {}}}, "guardrails.inputs", ""),
        (
            {"output_schema": {"type": "object", "properties": {}, "additionalProperties": True}},
            "output_schema",
            "strict",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                }
            },
            "output_schema",
            "nullable type",
        ),
        (
            {"output_schema": {"type": "array", "items": {"type": "string"}}},
            "output_schema",
            "root",
        ),
        (
            {"output_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}},
            "output_schema",
            "JSON Schema",
        ),
        (
            {"output_schema": {"type": "object", "properties": {"a": {"$ref": "#/defs/gone"}}}},
            "output_schema",
            "'#/defs/gone' does not resolve",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"$ref": "http://169.254.169.254/latest/schema.json"}},
                }
            },
            "output_schema",
            "only local references",
        ),
        (
            # Strict output allows no other property: `ghost` could never be present.
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "required": ["a", "ghost"],
                }
            },
            "output_schema",
            "requires ghost, not among its properties",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "object", "properties": {}, "required": ["y"]}},
                    "required": ["a"],
                }
            },
            "output_schema",
            "/properties/a requires y",
        ),
        # Schemas no answer can satisfy: every run would fail `invalid_model_output` (Q76).
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "integer", "enum": ["x"]}},
                }
            },
            "output_schema",
            "/properties/a allows only values that are not of its type 'integer'",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"const": 5, "type": "string"}},
                }
            },
            "output_schema",
            "not of its type 'string': 5",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}},
                }
            },
            "output_schema",
            "`minLength` 5 above `maxLength` 2",
        ),
        # What OpenAI's structured outputs refuse: every run would be an upstream 400.
        ({"output_schema": {"type": "object"}}, "output_schema", "/ is an object without"),
        (
            {"output_schema": {"type": "object", "properties": {"a": {}}}},
            "output_schema",
            "/properties/a names no type",
        ),
        (
            {"output_schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}},
            "output_schema",
            "uses `not`",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {},
                    "patternProperties": {"^x": {"type": "string"}},
                }
            },
            "output_schema",
            "uses `patternProperties`",
        ),
        (
            {
                "output_schema": {
                    "type": "object",
                    "properties": {
                        "a": {"allOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}
                    },
                }
            },
            "output_schema",
            "`allOf` of 2",
        ),
        # transfer_to_ + 53 characters: 65, past the 64 model APIs accept for a tool name.
        ({"handoffs": ["b" * 53]}, "handoffs", "longer than 64 characters"),
        (
            {
                "handoffs": ["bill-ing"],
                "tools": [
                    {
                        "type": "http",
                        "name": "transfer_to_bill_ing",
                        "url": "https://tools.example.com/x",
                        "parameters": {"type": "object", "properties": {}},
                    }
                ],
            },
            "handoffs",
            "transfer_to_bill_ing are already offered",
        ),
        (
            {
                "handoffs": ["a1"],
                "tools": [
                    {
                        "type": "mcp",
                        "name": "crm",
                        "url": "https://mcp.example.com/mcp",
                        "allowed_tools": ["transfer_to_a1"],
                    }
                ],
            },
            "handoffs",
            "transfer_to_a1 are already offered",
        ),
        ({"handoffs": ["Bad Name"]}, "handoffs.0", ""),
        ({"handoffs": [{"agent": "x", "extra": 1}]}, "handoffs.0.extra", ""),
    ],
)
async def test_invalid_composition_is_422_naming_the_field(
    client: httpx.AsyncClient,
    admin_headers: Admin,
    make_tenant: MakeTenant,
    spec: dict[str, Any],
    param: str,
    words: str,
) -> None:
    tenant = await make_tenant()
    r = await _put(client, admin_headers, tenant["id"], "bot", **spec)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param
    assert words in r.json()["error"]["message"]
    listed = await client.get(f"/admin/tenants/{tenant['id']}/agents", headers=admin_headers)
    assert listed.json()["data"] == []


async def test_handoffs_name_agents_of_the_same_tenant_only(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    assert (await _put(client, admin_headers, other["id"], "billing")).status_code == 201
    r = await _put(client, admin_headers, acme["id"], "triage", handoffs=["billing"])
    assert r.status_code == 422  # another tenant's agent is simply unknown
    assert r.json()["error"]["param"] == "handoffs"
    assert r.json()["error"]["code"] == "unknown_agent"
    assert "'billing'" in r.json()["error"]["message"]

    assert (await _put(client, admin_headers, acme["id"], "billing")).status_code == 201
    r = await _put(
        client,
        admin_headers,
        acme["id"],
        "triage",
        handoffs=["billing", {"agent": "billing", "description": "again"}],
    )
    assert r.status_code == 422 and "twice" in r.json()["error"]["message"]
    r = await _put(client, admin_headers, acme["id"], "billing", handoffs=["billing"])
    assert r.status_code == 422 and "itself" in r.json()["error"]["message"]

    r = await _put(
        client,
        admin_headers,
        acme["id"],
        "triage",
        handoffs=["billing", {"agent": "refunds", "description": "Refund questions"}],
    )
    assert r.status_code == 422 and "'refunds'" in r.json()["error"]["message"]
    assert (await _put(client, admin_headers, acme["id"], "refunds")).status_code == 201
    r = await _put(
        client,
        admin_headers,
        acme["id"],
        "triage",
        handoffs=["billing", {"agent": "refunds", "description": "Refund questions"}],
    )
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["handoffs"] == [
        "billing",
        {"agent": "refunds", "description": "Refund questions"},
    ]


async def test_a_handoff_graph_larger_than_a_run_takes_is_422(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    """A run builds at most 32 agents (the one it enters and all it reaches): a chain that
    would be longer was accepted and then cut short at run time, silently."""
    tenant = (await make_tenant())["id"]
    # c31 -> c30 -> ... -> c0: 32 agents reached from c31, the most a run takes.
    assert (await _put(client, admin_headers, tenant, "c0")).status_code == 201
    for i in range(1, 32):
        r = await _put(client, admin_headers, tenant, f"c{i}", handoffs=[f"c{i - 1}"])
        assert r.status_code == 201, (i, r.text)
    # A 33rd agent on top of the chain: its own graph would hold 33.
    r = await _put(client, admin_headers, tenant, "c32", handoffs=["c31"])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == "handoffs" and "33 agents" in error["message"], error
    # Growing the chain at its bottom: c0 gains a target, and c31's graph would hold 33.
    assert (await _put(client, admin_headers, tenant, "extra")).status_code == 201
    r = await _put(client, admin_headers, tenant, "c0", handoffs=["extra"])
    assert r.status_code == 422 and "agent 'c31'" in r.json()["error"]["message"], r.text
    # A cycle within the bound is fine (a graph counts each agent once).
    r = await _put(client, admin_headers, tenant, "c0", handoffs=["c31"])
    assert r.status_code == 200, r.text  # a new version of an existing agent


async def test_deleting_a_handoff_target_is_409_naming_who_uses_it(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    base = f"/admin/tenants/{tenant['id']}/agents"
    for name in ("billing", "refunds"):
        assert (await _put(client, admin_headers, tenant["id"], name)).status_code == 201
    assert (
        await _put(client, admin_headers, tenant["id"], "triage", handoffs=["billing"])
    ).status_code == 201
    assert (
        await _put(client, admin_headers, tenant["id"], "desk", handoffs=[{"agent": "billing"}])
    ).status_code == 201

    r = await client.delete(f"{base}/billing", headers=admin_headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "agent_in_use"
    assert "'triage'" in r.json()["error"]["message"] and "'desk'" in r.json()["error"]["message"]
    assert (await client.get(f"{base}/billing", headers=admin_headers)).status_code == 200

    # Version 2 of triage hands off to refunds instead; desk goes away: billing is free.
    assert (
        await _put(client, admin_headers, tenant["id"], "triage", handoffs=["refunds"])
    ).status_code == 200
    assert (await client.delete(f"{base}/desk", headers=admin_headers)).status_code == 204
    assert (await client.delete(f"{base}/billing", headers=admin_headers)).status_code == 204
    # Rolling triage back to version 1 would hand off to a deleted agent: refused.
    r = await client.post(f"{base}/triage/versions/1/activate", headers=admin_headers)
    assert r.status_code == 422 and "'billing'" in r.json()["error"]["message"]
    assert (await client.get(f"{base}/triage", headers=admin_headers)).json()["active_version"] == 2


async def test_valid_composition_round_trips(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    guardrails = {
        "input": {
            "max_chars": 8000,
            "blocked_patterns": ["(?i)ssn", r"\d{3}-\d{2}-\d{4}"],
            "classifier": {"instructions": "Flag abuse.", "model": "mock-model-mini"},
        },
        "output": {"blocked_patterns": ["secret"]},
    }
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    r = await _put(
        client, admin_headers, tenant["id"], "bot", guardrails=guardrails, output_schema=schema
    )
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["guardrails"] == guardrails
    assert r.json()["spec"]["output_schema"] == schema  # stored as given; made strict when built


async def test_another_tenants_handoffs_never_block_a_delete(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    for tenant in (acme, other):
        assert (await _put(client, admin_headers, tenant["id"], "billing")).status_code == 201
    r = await _put(client, admin_headers, other["id"], "triage", handoffs=["billing"])
    assert r.status_code == 201
    r = await client.delete(f"/admin/tenants/{acme['id']}/agents/billing", headers=admin_headers)
    assert r.status_code == 204
    r = await client.delete(f"/admin/tenants/{other['id']}/agents/billing", headers=admin_headers)
    assert r.status_code == 409


async def test_what_a_run_would_refuse_is_refused_at_put_and_at_activation(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    """A handoff target on a model outside `allowed_models`, and rolling back to a version
    whose model is no longer allowed or whose upstream is gone: 422, never a run-time surprise."""
    tenant = await make_tenant()
    base = f"/admin/tenants/{tenant['id']}"
    upstream = {
        "base_url": "https://llm.example.com/v1",
        "api_key": "sk-test-9876",
        "api": "responses",
    }
    assert (
        await client.put(f"{base}/upstreams/own", json=upstream, headers=admin_headers)
    ).status_code in (200, 201)
    assert (
        await _put(client, admin_headers, tenant["id"], "nano", model="other-model")
    ).status_code == 201
    assert (
        await _put(client, admin_headers, tenant["id"], "bot", upstream="own")
    ).status_code == 201
    assert (await _put(client, admin_headers, tenant["id"], "bot")).status_code == 200  # v2
    r = await client.patch(
        base, json={"allowed_models": [AGENT_SPEC["model"]]}, headers=admin_headers
    )
    assert r.status_code == 200, r.text

    r = await _put(client, admin_headers, tenant["id"], "front", handoffs=["nano"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert r.json()["error"]["param"] == "handoffs" and "'nano'" in r.json()["error"]["message"]
    # Reached through another agent's handoffs too (front -> middle -> nano): every run of
    # front would be refused at run time.
    r = await client.patch(base, json={"allowed_models": None}, headers=admin_headers)
    assert r.status_code == 200, r.text
    r = await _put(client, admin_headers, tenant["id"], "middle", handoffs=["nano"])
    assert r.status_code == 201, r.text
    r = await client.patch(
        base, json={"allowed_models": [AGENT_SPEC["model"]]}, headers=admin_headers
    )
    r = await _put(client, admin_headers, tenant["id"], "front", handoffs=["middle"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert "'nano'" in r.json()["error"]["message"]
    # A handoff back to the agent being PUT reaches its new spec, which was checked itself.
    r = await _put(client, admin_headers, tenant["id"], "loop", model="other-model")
    assert r.status_code == 422  # not allowed now
    r = await client.patch(base, json={"allowed_models": None}, headers=admin_headers)
    assert (
        await _put(client, admin_headers, tenant["id"], "loop", model="other-model")
    ).status_code == 201
    assert (
        await _put(client, admin_headers, tenant["id"], "back", handoffs=["loop"])
    ).status_code == 201
    r = await client.patch(
        base, json={"allowed_models": [AGENT_SPEC["model"]]}, headers=admin_headers
    )
    r = await _put(client, admin_headers, tenant["id"], "loop", handoffs=["back"])
    assert r.status_code == 200, r.text
    assert (await client.delete(f"{base}/agents/middle", headers=admin_headers)).status_code == 204

    assert (await client.delete(f"{base}/upstreams/own", headers=admin_headers)).status_code == 204
    r = await client.post(f"{base}/agents/bot/versions/1/activate", headers=admin_headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "upstream_not_found"
    assert (await client.get(f"{base}/agents/bot", headers=admin_headers)).json()[
        "active_version"
    ] == 2

    assert (
        await _put(client, admin_headers, tenant["id"], "old", model="other-model")
    ).status_code == 422
    r = await client.patch(base, json={"allowed_models": None}, headers=admin_headers)
    assert (
        await _put(client, admin_headers, tenant["id"], "old", model="other-model")
    ).status_code == 201
    assert (await _put(client, admin_headers, tenant["id"], "old")).status_code == 200
    r = await client.patch(
        base, json={"allowed_models": [AGENT_SPEC["model"]]}, headers=admin_headers
    )
    r = await client.post(f"{base}/agents/old/versions/1/activate", headers=admin_headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_not_allowed", r.text
    r = await client.post(f"{base}/agents/old/versions/2/activate", headers=admin_headers)
    assert r.status_code == 200, r.text


async def test_a_put_naming_an_agent_and_its_delete_never_both_succeed(
    client: httpx.AsyncClient, admin_headers: Admin, make_tenant: MakeTenant
) -> None:
    """Raced: `PUT a {"handoffs": ["b"]}` against `DELETE b`. One of them loses (422 or 409);
    a stored spec never names an agent that is gone."""
    tenant = await make_tenant()
    base = f"/admin/tenants/{tenant['id']}/agents"
    for round_ in range(12):
        a, b = f"a{round_}", f"b{round_}"
        assert (await _put(client, admin_headers, tenant["id"], b)).status_code == 201
        assert (await _put(client, admin_headers, tenant["id"], a)).status_code == 201
        put, delete = await asyncio.gather(
            _put(client, admin_headers, tenant["id"], a, handoffs=[b]),
            client.delete(f"{base}/{b}", headers=admin_headers),
        )
        assert not (put.status_code == 200 and delete.status_code == 204), round_
        assert {put.status_code, delete.status_code} <= {200, 204, 409, 422}, (
            put.text,
            delete.text,
        )
        stored = (await client.get(f"{base}/{a}", headers=admin_headers)).json()["spec"]
        if b in stored["handoffs"]:
            assert (await client.get(f"{base}/{b}", headers=admin_headers)).status_code == 200
