"""Every /admin route refuses a missing/wrong admin token (401) and valid tenant keys (403);
a tenant-shaped key that is not valid is a wrong credential like any other (401)."""

from __future__ import annotations

import httpx
import pytest

from tenants.api_key.keys import generate_key
from tests.tenants.conftest import IssueKey, MakeTenant

ROUTES = [
    ("POST", "/admin/tenants"),
    ("GET", "/admin/tenants"),
    ("GET", "/admin/tenants/ten_x"),
    ("PATCH", "/admin/tenants/ten_x"),
    ("DELETE", "/admin/tenants/ten_x"),
    ("POST", "/admin/tenants/ten_x/keys"),
    ("GET", "/admin/tenants/ten_x/keys"),
    ("DELETE", "/admin/tenants/ten_x/keys/key_x"),
    ("PUT", "/admin/tenants/ten_x/agents/bot"),
    ("GET", "/admin/tenants/ten_x/agents"),
    ("GET", "/admin/tenants/ten_x/agents/bot"),
    ("DELETE", "/admin/tenants/ten_x/agents/bot"),
    ("GET", "/admin/tenants/ten_x/agents/bot/versions"),
    ("POST", "/admin/tenants/ten_x/agents/bot/versions/1/activate"),
    ("GET", "/admin/tenants/ten_x/usage"),
    ("GET", "/admin/usage"),
]


async def _statuses(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> dict[tuple[str, str], tuple[int, str]]:
    seen = {}
    for method, path in ROUTES:
        response = await client.request(method, path, headers=headers, json={})
        seen[(method, path)] = (response.status_code, response.json()["error"]["type"])
    return seen


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-admin-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_admin_routes_need_the_admin_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    seen = await _statuses(client, headers)
    assert seen == {route: (401, "authentication_error") for route in ROUTES}


async def test_tenant_api_key_on_admin_routes_is_forbidden(
    client: httpx.AsyncClient, make_tenant: MakeTenant, issue_key: IssueKey
) -> None:
    key = (await issue_key((await make_tenant())["id"]))["key"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        seen = await _statuses(client, headers)
        assert seen == {route: (403, "permission_error") for route in ROUTES}
    unknown = generate_key()  # well formed, checksum right, never issued
    for headers in ({"Authorization": f"Bearer {unknown}"}, {"X-API-Key": unknown}):
        # A few routes only: failed authentications from one address are limited (429).
        for method, path in ROUTES[:4]:
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["type"] == "authentication_error"


async def test_a_tenant_key_beside_the_admin_token_is_forbidden(
    client: httpx.AsyncClient,
    make_tenant: MakeTenant,
    issue_key: IssueKey,
    admin_headers: dict[str, str],
) -> None:
    """The admin API takes no tenant credential: one sent beside a valid admin bearer is not
    silently ignored (a client mixing up its credentials hears about it)."""
    key = (await issue_key((await make_tenant())["id"]))["key"]
    seen = await _statuses(client, {**admin_headers, "X-API-Key": key})
    assert seen == {route: (403, "permission_error") for route in ROUTES}


async def test_admin_token_is_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/admin/tenants", headers=admin_headers)
    assert response.status_code == 200
    assert response.json() == {"data": [], "has_more": False}
