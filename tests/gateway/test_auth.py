"""Tenant authentication as a client sees it: one 401 body for every bad key, 403s for
suspension and scopes, and changes that take effect within the cache bound.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tenants.api_key.keys import checksum, generate_key
from tests.gateway.conftest import ADMIN, Gateway, Tenant

RUN = "/v1/agents/assistant/runs"
BODY = {"input": "hello"}


async def _unauthorized_body(gateway: Gateway, headers: dict[str, str]) -> dict[str, object]:
    r = await gateway.client.post(RUN, json=BODY, headers=headers)
    assert r.status_code == 401, r.text
    return dict(r.json())


async def test_every_bad_credential_gets_the_same_401(gateway: Gateway, tenant: Tenant) -> None:
    body = generate_key()[3:35]
    bad_checksum = "gw_" + body + ("000000" if checksum(body) != "000000" else "000001")
    variants = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {bad_checksum}"},
        {"Authorization": f"Bearer {generate_key()}"},  # well formed, unknown
        {"X-API-Key": generate_key()},
        {"Authorization": f"Bearer {tenant.key}x"},
    ]
    bodies = [await _unauthorized_body(gateway, h) for h in variants]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["error"] == {
        "type": "authentication_error",
        "code": "invalid_api_key",
        "message": "Invalid or missing credential.",
        "param": None,
    }


async def test_x_api_key_header_is_accepted(gateway: Gateway, tenant: Tenant) -> None:
    r = await gateway.client.get("/v1/agents", headers={"X-API-Key": tenant.key})
    assert r.status_code == 200
    assert [a["name"] for a in r.json()["data"]] == ["assistant"]


async def test_two_credentials_in_one_request_are_refused(gateway: Gateway, tenant: Tenant) -> None:
    """A request naming two different credentials is refused, not resolved as whichever
    header came first (the same key in both headers is one credential)."""
    other = await gateway.create_tenant("other-tenant")
    ambiguous = [
        [("Authorization", f"Bearer {tenant.key}"), ("Authorization", f"Bearer {other.key}")],
        [("X-API-Key", tenant.key), ("X-API-Key", other.key)],
        [("Authorization", f"Bearer {tenant.key}"), ("X-API-Key", other.key)],
    ]
    for headers in ambiguous:
        r = await gateway.client.get("/v1/agents", headers=httpx.Headers(headers))
        assert r.status_code == 401, headers
    same = [("Authorization", f"Bearer {tenant.key}"), ("X-API-Key", tenant.key)]
    r = await gateway.client.get("/v1/agents", headers=httpx.Headers(same))
    assert r.status_code == 200


async def test_revoked_key_stops_working_within_the_cache_ttl(
    gateway: Gateway, tenant: Tenant
) -> None:
    assert (await gateway.client.get("/v1/agents", headers=tenant.headers)).status_code == 200
    r = await gateway.client.delete(
        f"/admin/tenants/{tenant.id}/keys/{tenant.key_id}", headers=ADMIN
    )
    assert r.status_code == 204
    await asyncio.sleep(gateway.app.state.settings.principal_cache_ttl_s + 0.1)
    r = await gateway.client.get("/v1/agents", headers=tenant.headers)
    assert r.status_code == 401


async def test_suspended_tenant_gets_403_and_reactivation_restores(
    gateway: Gateway, tenant: Tenant
) -> None:
    ttl = gateway.app.state.settings.principal_cache_ttl_s
    r = await gateway.client.patch(
        f"/admin/tenants/{tenant.id}", json={"status": "suspended"}, headers=ADMIN
    )
    assert r.status_code == 200
    await asyncio.sleep(ttl + 0.1)
    r = await gateway.client.post(RUN, json=BODY, headers=tenant.headers)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    await gateway.client.patch(
        f"/admin/tenants/{tenant.id}", json={"status": "active"}, headers=ADMIN
    )
    await asyncio.sleep(ttl + 0.1)
    assert (await gateway.client.post(RUN, json=BODY, headers=tenant.headers)).status_code == 200


async def test_deleted_tenant_keys_stop_working(gateway: Gateway, tenant: Tenant) -> None:
    r = await gateway.client.delete(f"/admin/tenants/{tenant.id}", headers=ADMIN)
    assert r.status_code == 204
    await asyncio.sleep(gateway.app.state.settings.principal_cache_ttl_s + 0.1)
    assert (await gateway.client.get("/v1/agents", headers=tenant.headers)).status_code == 401


async def test_expired_key_is_rejected(gateway: Gateway, tenant: Tenant) -> None:
    from datetime import UTC, datetime, timedelta

    expires = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    r = await gateway.client.post(
        f"/admin/tenants/{tenant.id}/keys",
        json={"name": "short", "expires_at": expires},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    headers = {"Authorization": f"Bearer {r.json()['key']}"}
    assert (await gateway.client.get("/v1/agents", headers=headers)).status_code == 200
    await asyncio.sleep(1.1)
    assert (await gateway.client.get("/v1/agents", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path", "status"),
    [
        (["usage"], "POST", RUN, 403),
        (["usage"], "GET", "/v1/agents", 403),
        (["usage"], "GET", "/v1/usage", 200),
        (["runs"], "GET", "/v1/usage", 403),
        (["runs"], "POST", RUN, 200),
    ],
)
async def test_scopes_are_enforced(
    gateway: Gateway, tenant: Tenant, scopes: list[str], method: str, path: str, status: int
) -> None:
    r = await gateway.client.post(
        f"/admin/tenants/{tenant.id}/keys", json={"name": "scoped", "scopes": scopes}, headers=ADMIN
    )
    key = r.json()["key"]
    r = await gateway.client.request(
        method,
        path,
        json=BODY if method == "POST" else None,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"]["code"] == "missing_scope"


async def test_tenant_key_on_admin_routes_is_403(gateway: Gateway, tenant: Tenant) -> None:
    for method, path in [
        ("GET", "/admin/tenants"),
        ("GET", f"/admin/tenants/{tenant.id}"),
        ("POST", "/admin/tenants"),
        ("GET", f"/admin/tenants/{tenant.id}/usage"),
    ]:
        r = await gateway.client.request(method, path, headers=tenant.headers)
        assert r.status_code == 403, (method, path, r.text)
        r = await gateway.client.request(method, path, headers={"X-API-Key": tenant.key})
        assert r.status_code == 403, (method, path, r.text)
