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


async def test_the_agents_list_pages_by_name_and_holds_only_the_tenants_own(
    gateway: Gateway,
) -> None:
    a = await gateway.create_tenant("pager-a")
    other = await gateway.create_tenant("pager-b")
    for name in ("delta", "alpha", "charlie", "bravo"):
        r = await gateway.client.put(
            f"/admin/tenants/{a.id}/agents/{name}", json={"instructions": "x"}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
    names: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = (await gateway.client.get("/v1/agents", params=params, headers=a.headers)).json()
        assert len(page["data"]) <= 2
        names += [agent["name"] for agent in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["name"]
    assert names == ["alpha", "assistant", "bravo", "charlie", "delta"]
    whole = (await gateway.client.get("/v1/agents", headers=other.headers)).json()
    assert [agent["name"] for agent in whole["data"]] == ["assistant"]
    assert whole["has_more"] is False
    for bad in ({"limit": 0}, {"limit": 101}, {"after": "Not A Name"}):
        r = await gateway.client.get("/v1/agents", params=bad, headers=a.headers)
        assert r.status_code == 422, bad
