"""B cannot read, run, change or delete A's objects (404, never 403); bodies cannot smuggle
`tenant_id`, `key_hash` or unknown fields."""

from __future__ import annotations

from tests.identity.conftest import ADMIN, Gateway


async def test_b_cannot_reach_a_objects(gw: Gateway) -> None:
    a = await gw.create_tenant("tenant-a")
    b = await gw.create_tenant("tenant-b")
    r = await gw.client.put(
        f"/admin/tenants/{a.id}/agents/private-bot", json={"model": "mock-model"}, headers=ADMIN
    )
    assert r.status_code == 201
    # Data plane: B's key on A's agent.
    for body in ({"input": "hi"}, {"input": "hi", "stream": True}):
        r = await gw.client.post("/v1/agents/private-bot/runs", json=body, headers=b.headers)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    names = [
        x["name"] for x in (await gw.client.get("/v1/agents", headers=b.headers)).json()["data"]
    ]
    assert "private-bot" not in names
    # Data plane: B's key on A's conversation, on every route and as a run's conversation_id.
    conv = (await gw.client.post("/v1/conversations", json={}, headers=a.headers)).json()["id"]
    for method, path, body in (
        ("GET", f"/v1/conversations/{conv}", None),
        ("GET", f"/v1/conversations/{conv}/items", None),
        ("DELETE", f"/v1/conversations/{conv}", None),
        ("POST", "/v1/agents/assistant/runs", {"input": "hi", "conversation_id": conv}),
    ):
        r = await gw.client.request(method, path, json=body, headers=b.headers)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert (await gw.client.get(f"/v1/conversations/{conv}", headers=a.headers)).is_success
    # Admin plane: A's key and agent addressed under B's tenant id.
    key_url = f"/admin/tenants/{b.id}/keys/{a.key_id}"
    for method, body in (("PATCH", {"expires_at": None}), ("DELETE", None)):
        r = await gw.client.request(method, key_url, json=body, headers=ADMIN)
        assert r.status_code == 404, (method, r.text)
    agent_url = f"/admin/tenants/{b.id}/agents/private-bot"
    for method, path, body in (
        ("GET", agent_url, None),
        ("DELETE", agent_url, None),
        ("GET", f"{agent_url}/versions", None),
        ("POST", f"{agent_url}/versions/1/activate", None),
    ):
        r = await gw.client.request(method, path, json=body, headers=ADMIN)
        assert r.status_code == 404, (method, path, r.text)
    # A's things are untouched.
    assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 200
    r = await gw.client.post("/v1/agents/private-bot/runs", json={"input": "hi"}, headers=a.headers)
    assert r.status_code == 200


async def test_mass_assignment_is_refused(gw: Gateway) -> None:
    a = await gw.create_tenant("tenant-a")
    b = await gw.create_tenant("tenant-b")
    probes = [
        ("POST", "/admin/tenants", {"slug": "c-co", "name": "C", "id": a.id}),
        (
            "POST",
            "/admin/tenants",
            {"slug": "c-co", "name": "C", "status": "suspended", "deleted_at": None},
        ),
        ("PATCH", f"/admin/tenants/{b.id}", {"tenant_id": a.id}),
        ("PATCH", f"/admin/tenants/{b.id}", {"id": a.id}),
        ("POST", f"/admin/tenants/{b.id}/keys", {"name": "k", "tenant_id": a.id}),
        ("POST", f"/admin/tenants/{b.id}/keys", {"name": "k", "key_hash": "0" * 64}),
        (
            "PATCH",
            f"/admin/tenants/{a.id}/keys/{a.key_id}",
            {"expires_at": None, "key_hash": "0" * 64},
        ),
        (
            "PATCH",
            f"/admin/tenants/{a.id}/keys/{a.key_id}",
            {"expires_at": None, "revoked_at": None},
        ),
        ("PUT", f"/admin/tenants/{b.id}/agents/x", {"model": "m", "tenant_id": a.id}),
        ("PUT", f"/admin/tenants/{b.id}/jwt", {"mode": "hs256", "issuer": "i", "tenant_id": a.id}),
        ("POST", "/v1/agents/assistant/runs", {"input": "hi", "tenant_id": a.id}),
        ("POST", "/v1/conversations", {"metadata": {}, "tenant_id": a.id}),
        ("POST", "/v1/conversations", {"id": "conv_chosen"}),
    ]
    for method, path, body in probes:
        headers = b.headers if path.startswith("/v1") else ADMIN
        r = await gw.client.request(method, path, json=body, headers=headers)
        assert r.status_code == 422, (method, path, r.text)
    # Nothing was applied: no tenant c-co, B has one key, A's key still works.
    slugs = [
        t["slug"] for t in (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
    ]
    assert slugs == ["tenant-a", "tenant-b"]
    keys = (await gw.client.get(f"/admin/tenants/{b.id}/keys", headers=ADMIN)).json()["data"]
    assert len(keys) == 1
    assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 200
    assert "key_hash" not in str(keys)
