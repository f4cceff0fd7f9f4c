"""Tenant isolation on the data plane: B can neither see, run nor count A's things."""

from __future__ import annotations

from tests.gateway.conftest import ADMIN, Gateway


async def test_tenant_b_cannot_see_run_or_count_tenant_a(gateway: Gateway) -> None:
    a = await gateway.create_tenant("tenant-a")
    b_id = (
        await gateway.client.post(
            "/admin/tenants", json={"slug": "tenant-b", "name": "B"}, headers=ADMIN
        )
    ).json()["id"]
    b_key = (
        await gateway.client.post(f"/admin/tenants/{b_id}/keys", json={"name": "b"}, headers=ADMIN)
    ).json()["key"]
    b = {"Authorization": f"Bearer {b_key}"}

    r = await gateway.client.post(
        "/v1/agents/assistant/runs", json={"input": "hi"}, headers=a.headers
    )
    assert r.status_code == 200

    r = await gateway.client.get("/v1/agents", headers=b)
    assert r.status_code == 200 and r.json()["data"] == []
    r = await gateway.client.post("/v1/agents/assistant/runs", json={"input": "hi"}, headers=b)
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    r = await gateway.client.post(
        "/v1/agents/assistant/runs", json={"input": "hi", "stream": True}, headers=b
    )
    assert r.status_code == 404

    await gateway.flush_usage()
    r = await gateway.client.get("/v1/usage", headers=b)
    assert r.json()["totals"]["runs"] == 0 and r.json()["data"] == []
    r = await gateway.client.get("/v1/usage", headers=a.headers)
    assert r.json()["totals"]["runs"] == 1
