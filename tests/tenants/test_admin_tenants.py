"""/admin/tenants: create, read, list, update, soft delete."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlmodel import select

from gateway.core.clock import rfc3339
from gateway.core.db import Database
from tenants.agent.repository import AgentRepository
from tenants.models import ApiKey
from tests.tenants.conftest import IssueKey, MakeTenant, PutAgent

NO_LIMITS = {
    "requests_per_minute": None,
    "requests_per_minute_per_user": None,
    "tokens_per_minute": None,
    "tokens_per_day": None,
    "max_concurrent_runs": None,
    "spend_per_day_usd": None,
    "spend_per_month_usd": None,
}


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_create_returns_the_tenant(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = {"slug": "acme", "name": "Acme Inc", "limits": {"requests_per_minute": 60}}
    response = await client.post("/admin/tenants", json=body, headers=admin_headers)

    assert response.status_code == 201
    tenant = response.json()
    assert tenant["id"].startswith("ten_")
    assert tenant["object"] == "tenant"
    assert (tenant["slug"], tenant["name"], tenant["status"]) == ("acme", "Acme Inc", "active")
    assert tenant["limits"] == {**NO_LIMITS, "requests_per_minute": 60}
    assert tenant["created_at"].endswith("Z")
    datetime.fromisoformat(tenant["created_at"])
    assert set(tenant) == {
        "id", "object", "slug", "name", "status", "limits", "allowed_models", "created_at",
        "updated_at",
    }  # fmt: skip
    assert tenant["allowed_models"] is None

    fetched = await client.get(f"/admin/tenants/{tenant['id']}", headers=admin_headers)
    assert fetched.status_code == 200
    assert fetched.json() == tenant


async def test_create_without_limits_is_unlimited(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()
    assert tenant["limits"] == NO_LIMITS


async def test_duplicate_slug_is_conflict(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    await make_tenant("acme")
    response = await client.post(
        "/admin/tenants", json={"slug": "acme", "name": "Other"}, headers=admin_headers
    )
    assert response.status_code == 409
    assert _error(response)["type"] == "conflict_error"
    assert _error(response)["param"] == "slug"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"slug": "A-cme", "name": "x"}, "slug"),
        ({"slug": "a", "name": "x"}, "slug"),
        ({"slug": "a" * 41, "name": "x"}, "slug"),
        ({"slug": "ac me", "name": "x"}, "slug"),
        ({"slug": "ac_me", "name": "x"}, "slug"),
        ({"name": "x"}, "slug"),
        ({"slug": "acme", "name": ""}, "name"),
        ({"slug": "acme", "name": "   "}, "name"),
        ({"slug": "acme", "name": "x" * 201}, "name"),
        ({"slug": "acme", "name": "a\x00b"}, "name"),
        ({"slug": "acme", "name": "line\nbreak"}, "name"),
        # The rules hold for the name as sent, before its spaces are trimmed (the schema's view).
        ({"slug": "acme", "name": "\nAcme"}, "name"),
        ({"slug": "acme", "name": "Acme\t"}, "name"),
        ({"slug": "acme", "name": " " + "x" * 200}, "name"),
        ({"slug": "acme", "name": "x", "status": "active"}, "status"),
        ({"slug": "acme", "name": "x", "limits": {"requests_per_minute": 0}}, None),
        ({"slug": "acme", "name": "x", "limits": {"tokens_per_day": -5}}, None),
        ({"slug": "acme", "name": "x", "limits": {"tokens_per_day": "100"}}, None),
        ({"slug": "acme", "name": "x", "limits": {"tokens_per_day": 1.5}}, None),
        ({"slug": "acme", "name": "x", "limits": {"max_concurrent_runs": True}}, None),
        ({"slug": "acme", "name": "x", "limits": {"requests_per_hour": 5}}, None),
        ({"slug": "acme", "name": "x", "limits": [1]}, "limits"),
        ({"slug": "acme", "name": "x", "allowed_models": ["m", "n", "m"]}, "allowed_models"),
    ],
)
async def test_create_rejects_invalid_bodies(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    body: dict[str, Any],
    param: str | None,
) -> None:
    response = await client.post("/admin/tenants", json=body, headers=admin_headers)
    assert response.status_code == 422
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    if param is None:
        assert error["param"].startswith("limits.")
    else:
        assert error["param"] == param
    listed = await client.get("/admin/tenants", headers=admin_headers)
    assert listed.json()["data"] == []


async def test_names_are_trimmed_of_the_spaces_around_them(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = {"slug": "acme", "name": "  Acme Corp "}
    created = await client.post("/admin/tenants", json=body, headers=admin_headers)
    assert created.status_code == 201
    assert created.json()["name"] == "Acme Corp"
    tenant_id = created.json()["id"]
    renamed = await client.patch(
        f"/admin/tenants/{tenant_id}", json={"name": "\u3000Acme "}, headers=admin_headers
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "\u3000Acme"  # only ASCII spaces are trimmed


async def test_malformed_json_is_rejected(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/admin/tenants",
        content=b'{"slug": ',
        headers={**admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert _error(response)["type"] == "invalid_request_error"


async def test_list_paginates_with_limit_and_after(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    ids = [(await make_tenant(f"t-{i}"))["id"] for i in range(5)]

    first = (await client.get("/admin/tenants?limit=2", headers=admin_headers)).json()
    assert [t["id"] for t in first["data"]] == ids[:2]
    assert first["has_more"] is True

    second = await client.get(f"/admin/tenants?limit=2&after={ids[1]}", headers=admin_headers)
    assert [t["id"] for t in second.json()["data"]] == ids[2:4]
    assert second.json()["has_more"] is True

    last = await client.get(f"/admin/tenants?limit=2&after={ids[3]}", headers=admin_headers)
    assert [t["id"] for t in last.json()["data"]] == ids[4:]
    assert last.json()["has_more"] is False

    default = (await client.get("/admin/tenants", headers=admin_headers)).json()
    assert [t["id"] for t in default["data"]] == ids
    assert default["has_more"] is False


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "after=", "after=ten%00x", "after=" + "a" * 65]
)
async def test_list_rejects_bad_pagination(
    client: httpx.AsyncClient, admin_headers: dict[str, str], query: str
) -> None:
    response = await client.get(f"/admin/tenants?{query}", headers=admin_headers)
    assert response.status_code == 422
    assert _error(response)["param"] in ("limit", "after")


async def test_list_accepts_the_maximum_limit(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    await make_tenant()
    response = await client.get("/admin/tenants?limit=100", headers=admin_headers)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


async def test_patch_changes_name_status_and_merges_limits(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(limits={"requests_per_minute": 60, "tokens_per_day": 1000})
    url = f"/admin/tenants/{tenant['id']}"

    response = await client.patch(
        url,
        json={"name": "Renamed", "status": "suspended", "limits": {"tokens_per_day": None}},
        headers=admin_headers,
    )
    assert response.status_code == 200
    patched = response.json()
    assert (patched["name"], patched["status"], patched["slug"]) == (
        "Renamed",
        "suspended",
        tenant["slug"],
    )
    assert patched["limits"] == {**NO_LIMITS, "requests_per_minute": 60}
    assert patched["updated_at"] >= tenant["updated_at"]

    again = await client.patch(
        url, json={"limits": {"max_concurrent_runs": 3}, "status": "active"}, headers=admin_headers
    )
    assert again.json()["limits"] == {
        **NO_LIMITS,
        "requests_per_minute": 60,
        "max_concurrent_runs": 3,
    }
    assert again.json()["status"] == "active"
    assert (await client.get(url, headers=admin_headers)).json() == again.json()


async def test_patch_limits_null_makes_every_limit_unlimited(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(limits={"requests_per_minute": 5, "tokens_per_day": 100})
    url = f"/admin/tenants/{tenant['id']}"
    r = await client.patch(url, json={"name": "renamed"}, headers=admin_headers)
    assert r.json()["limits"]["requests_per_minute"] == 5  # omitted: unchanged
    r = await client.patch(url, json={"limits": None}, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["limits"] == NO_LIMITS
    assert (await client.get(url, headers=admin_headers)).json()["limits"] == NO_LIMITS


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"slug": "new-slug"}, "slug"),
        ({"owner": "me"}, "owner"),
        ({"status": "deleted"}, "status"),
        ({"status": None}, "status"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"limits": {"tokens_per_minute": 0}}, "limits.tokens_per_minute"),
        ({"limits": {"burst": 5}}, "limits.burst"),
    ],
)
async def test_patch_rejects_invalid_bodies(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    body: dict[str, Any],
    param: str,
) -> None:
    tenant = await make_tenant("stable")
    url = f"/admin/tenants/{tenant['id']}"
    response = await client.patch(url, json=body, headers=admin_headers)
    assert response.status_code == 422
    assert _error(response)["param"] == param
    if "slug" in body:
        assert "immutable" in _error(response)["message"]
    assert (await client.get(url, headers=admin_headers)).json() == tenant


async def test_patch_with_the_tenants_own_slug_changes_nothing_else(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    """A client that sends the tenant back with a change (its slug unchanged) is not refused."""
    tenant = await make_tenant("stable")
    url = f"/admin/tenants/{tenant['id']}"
    response = await client.patch(
        url, json={"slug": "stable", "name": "Renamed"}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["slug"] == "stable" and response.json()["name"] == "Renamed"


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)]
)
async def test_unknown_tenant_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str], method: str, body: Any
) -> None:
    for tenant_id in ("ten_doesnotexist", "ten%00x", "x" * 300):
        response = await client.request(
            method, f"/admin/tenants/{tenant_id}", json=body, headers=admin_headers
        )
        assert response.status_code == 404
        assert _error(response)["type"] == "not_found_error"


async def test_delete_hides_the_tenant_and_revokes_its_keys(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    make_tenant: MakeTenant,
    issue_key: IssueKey,
    put_agent: PutAgent,
) -> None:
    tenant = await make_tenant("doomed")
    other = await make_tenant("survivor")
    await issue_key(tenant["id"])
    await issue_key(tenant["id"])
    await issue_key(other["id"])
    await put_agent(tenant["id"], "bot")
    url = f"/admin/tenants/{tenant['id']}"

    response = await client.delete(url, headers=admin_headers)
    assert response.status_code == 204
    assert response.content == b""

    for method, path, body in [
        ("GET", url, None),
        ("PATCH", url, {"name": "x"}),
        ("DELETE", url, None),
        ("GET", f"{url}/keys", None),
        ("POST", f"{url}/keys", {"name": "x"}),
        ("GET", f"{url}/agents", None),
        ("GET", f"{url}/agents/bot", None),
        ("PUT", f"{url}/agents/bot", {"instructions": "x"}),
        ("DELETE", f"{url}/agents/bot", None),
        ("GET", f"{url}/agents/bot/versions", None),
        ("POST", f"{url}/agents/bot/versions/1/activate", None),
    ]:
        got = await client.request(method, path, json=body, headers=admin_headers)
        assert got.status_code == 404, (method, path, got.text)
        assert got.json()["error"]["type"] == "not_found_error"

    listed = (await client.get("/admin/tenants", headers=admin_headers)).json()
    assert [t["id"] for t in listed["data"]] == [other["id"]]

    async with db.session() as session:
        rows = (await session.exec(select(ApiKey))).all()
        assert len(rows) == 3
        for row in rows:
            assert (row.revoked_at is not None) == (row.tenant_id == tenant["id"])
        # The data plane can no longer run the deleted tenant's agents.
        assert await AgentRepository(session).get_active(tenant["id"], "bot") is None
        assert await AgentRepository(session).list_active(tenant["id"]) == []

    # Nothing under its path answers any more; its usage stays readable by id.
    assert (await client.get(f"{url}/usage", headers=admin_headers)).status_code == 404
    usage = await client.get(
        "/admin/usage", params={"tenant_id": tenant["id"]}, headers=admin_headers
    )
    assert usage.status_code == 200
    assert usage.json()["totals"]["runs"] == 0


async def test_delete_keeps_the_first_revocation_time(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    tenant = await make_tenant()
    key = await issue_key(tenant["id"])
    url = f"/admin/tenants/{tenant['id']}"
    await client.delete(f"{url}/keys/{key['id']}", headers=admin_headers)
    listed = (await client.get(f"{url}/keys", headers=admin_headers)).json()["data"]
    first_revocation = listed[0]["revoked_at"]

    await client.delete(url, headers=admin_headers)

    async with db.session() as session:
        row = (await session.exec(select(ApiKey))).one()
        assert rfc3339(row.revoked_at) == first_revocation


async def test_deleted_slug_stays_taken(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant("once")
    await client.delete(f"/admin/tenants/{tenant['id']}", headers=admin_headers)
    response = await client.post(
        "/admin/tenants", json={"slug": "once", "name": "again"}, headers=admin_headers
    )
    assert response.status_code == 409
    assert "deleted" in response.json()["error"]["message"]


async def test_concurrent_deletes_of_a_tenant_delete_it_once(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    """Five DELETEs at once: one 204 and four 404s, one `tenant.delete` in the audit log; a
    key revoked twice (or at once) is audited once."""
    tenant = await make_tenant()
    key = await issue_key(tenant["id"])
    url = f"/admin/tenants/{tenant['id']}"
    revokes = await asyncio.gather(
        *(client.delete(f"{url}/keys/{key['id']}", headers=admin_headers) for _ in range(3))
    )
    assert [r.status_code for r in revokes] == [204] * 3
    deletes = await asyncio.gather(*(client.delete(url, headers=admin_headers) for _ in range(5)))
    assert sorted(r.status_code for r in deletes) == [204, 404, 404, 404, 404]
    audit = await client.get(
        "/admin/audit", params={"tenant_id": tenant["id"], "limit": 100}, headers=admin_headers
    )
    actions = [event["action"] for event in audit.json()["data"]]
    assert actions.count("tenant.delete") == 1 and actions.count("key.revoke") == 1


async def test_a_new_tenant_starts_with_the_deployments_default_limits(
    database_url: str, admin_headers: dict[str, str]
) -> None:
    """SPEC 6: limits are defaulted from settings. The body's own fields win, `null` included;
    a default that is not valid tenant limits stops the start."""
    from gateway.app import create_app
    from gateway.core.config import SettingsError
    from tests.conftest import make_settings, started_app

    defaults = {"requests_per_minute": 7, "spend_per_day_usd": "2.50"}
    settings = make_settings(database_url, default_tenant_limits=defaults)
    async for app in started_app(settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:

            async def create(slug: str, **body: Any) -> dict[str, Any]:
                r = await client.post(
                    "/admin/tenants",
                    json={"slug": slug, "name": slug, **body},
                    headers=admin_headers,
                )
                assert r.status_code == 201, r.text
                limits: dict[str, Any] = r.json()["limits"]
                return limits

            plain = await create("defaulted")
            # Written one way (no trailing zeros), as everywhere amounts are shown.
            assert plain["requests_per_minute"] == 7 and plain["spend_per_day_usd"] == "2.5"
            assert plain["tokens_per_day"] is None
            own = await create("own", limits={"requests_per_minute": None, "tokens_per_day": 100})
            assert own["requests_per_minute"] is None and own["tokens_per_day"] == 100
            assert own["spend_per_day_usd"] == "2.5"
            # SPEC 6, "null = unlimited": `limits: null` is no limit at all, defaults included.
            unlimited = await create("unlimited", limits=None)
            assert unlimited == NO_LIMITS
    with pytest.raises(SettingsError, match="GATEWAY_DEFAULT_TENANT_LIMITS"):
        create_app(make_settings(database_url, default_tenant_limits={"requests_per_minute": 0}))
    with pytest.raises(SettingsError, match="GATEWAY_DEFAULT_TENANT_LIMITS"):
        create_app(make_settings(database_url, default_tenant_limits={"bogus": 1}))
