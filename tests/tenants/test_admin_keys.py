"""/admin/tenants/{id}/keys: issue (plaintext once), list, revoke; the issue_key service."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlmodel import select

from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from tenants.api_key.keys import generate_key, hash_key, is_well_formed
from tenants.api_key.repository import ApiKeyRepository
from tenants.api_key.schemas import KeyCreate
from tenants.api_key.service import issue_key as issue_key_service
from tenants.models import ApiKey
from tests.conftest import SECRET_KEY, make_settings
from tests.tenants.conftest import IssueKey, MakeTenant

ALL_SCOPES = ["runs", "conversations", "usage"]


async def test_issue_returns_the_plaintext_once(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    make_tenant: MakeTenant,
) -> None:
    tenant = await make_tenant()
    url = f"/admin/tenants/{tenant['id']}/keys"
    response = await client.post(url, json={"name": "backend"}, headers=admin_headers)

    assert response.status_code == 201
    created = response.json()
    plaintext = created["key"]
    assert is_well_formed(plaintext)
    assert created["id"].startswith("key_")
    assert created["object"] == "api_key"
    assert created["name"] == "backend"
    assert created["scopes"] == ALL_SCOPES
    assert created["expires_at"] is None
    assert created["prefix"] == plaintext[:7]
    assert created["last4"] == plaintext[-4:]
    assert created["created_at"].endswith("Z")

    listed = await client.get(url, headers=admin_headers)
    assert listed.status_code == 200
    assert plaintext not in listed.text
    [row] = listed.json()["data"]
    assert row == {
        "id": created["id"],
        "object": "api_key",
        "name": "backend",
        "prefix": plaintext[:7],
        "last4": plaintext[-4:],
        "display": f"{plaintext[:7]}\u2026{plaintext[-4:]}",
        "scopes": ALL_SCOPES,
        "created_at": created["created_at"],
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
    }

    async with db.session() as session:
        stored = (await session.exec(select(ApiKey))).one()
    assert stored.key_hash != plaintext
    assert plaintext not in stored.key_hash
    assert stored.key_hash == hash_key(plaintext, SECRET_KEY)
    assert stored.key_hash not in listed.text
    assert stored.key_hash not in response.text


async def test_two_keys_are_different(make_tenant: MakeTenant, issue_key: IssueKey) -> None:
    tenant = await make_tenant()
    first, second = await issue_key(tenant["id"]), await issue_key(tenant["id"])
    assert first["key"] != second["key"]
    assert first["id"] != second["id"]


async def test_issue_with_scopes_and_expiry(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    expires = (utcnow() + timedelta(days=7)).replace(microsecond=0)
    local = expires.astimezone(timezone(timedelta(hours=2)))
    response = await client.post(
        f"/admin/tenants/{tenant['id']}/keys",
        json={"name": "usage-reader", "scopes": ["usage", "runs"], "expires_at": local.isoformat()},
        headers=admin_headers,
    )
    assert response.status_code == 201
    created = response.json()
    assert created["scopes"] == ["runs", "usage"]
    expected = expires.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert created["expires_at"] == expected
    listed = await client.get(f"/admin/tenants/{tenant['id']}/keys", headers=admin_headers)
    assert listed.json()["data"][0]["expires_at"] == expected
    assert listed.json()["data"][0]["scopes"] == ["runs", "usage"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "\r\nkey"}, "name"),
        ({"name": "k" * 200 + " "}, "name"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["admin"]}, "scopes.0"),
        ({"name": "k", "scopes": ["runs", "runs"]}, "scopes"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
        ({"name": "k", "expires_at": "next week"}, "expires_at"),
        # Not RFC 3339: a Unix time (a number or digits) or a space for the `T` would become
        # some instant the client did not write (they were taken).
        ({"name": "k", "expires_at": 1900000000}, "expires_at"),
        ({"name": "k", "expires_at": "1900000000"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-01-01 00:00:00Z"}, "expires_at"),
        # Their UTC equivalents leave years 1-9999 (they were 500s).
        ({"name": "k", "expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),
        ({"name": "k", "expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
        ({"name": "k", "key": generate_key()}, "key"),
        ({"name": "k", "tenant_id": "ten_other"}, "tenant_id"),
    ],
)
async def test_issue_rejects_invalid_bodies(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    body: dict[str, Any],
    param: str,
) -> None:
    tenant = await make_tenant()
    url = f"/admin/tenants/{tenant['id']}/keys"
    response = await client.post(url, json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param
    assert (await client.get(url, headers=admin_headers)).json()["data"] == []


async def test_revoke_is_idempotent(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    tenant = await make_tenant()
    kept = await issue_key(tenant["id"], name="kept")
    revoked = await issue_key(tenant["id"], name="revoked")
    url = f"/admin/tenants/{tenant['id']}/keys"

    response = await client.delete(f"{url}/{revoked['id']}", headers=admin_headers)
    assert response.status_code == 204
    first = {k["id"]: k for k in (await client.get(url, headers=admin_headers)).json()["data"]}
    assert first[kept["id"]]["revoked_at"] is None
    assert first[revoked["id"]]["revoked_at"].endswith("Z")

    again = await client.delete(f"{url}/{revoked['id']}", headers=admin_headers)
    assert again.status_code == 204
    second = {k["id"]: k for k in (await client.get(url, headers=admin_headers)).json()["data"]}
    assert second == first


async def test_unknown_key_or_tenant_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    for method, path, body in [
        ("DELETE", f"/admin/tenants/{tenant['id']}/keys/key_nope", None),
        ("DELETE", f"/admin/tenants/{tenant['id']}/keys/key%00x", None),
        ("DELETE", "/admin/tenants/ten_nope/keys/key_nope", None),
        ("GET", "/admin/tenants/ten_nope/keys", None),
        ("POST", "/admin/tenants/ten_nope/keys", {"name": "k"}),
    ]:
        response = await client.request(method, path, json=body, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["type"] == "not_found_error"


async def test_list_paginates(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    tenant = await make_tenant()
    ids = [(await issue_key(tenant["id"], name=f"k{i}"))["id"] for i in range(3)]
    url = f"/admin/tenants/{tenant['id']}/keys"

    page = (await client.get(f"{url}?limit=2", headers=admin_headers)).json()
    assert [k["id"] for k in page["data"]] == ids[:2]
    assert page["has_more"] is True
    rest = (await client.get(f"{url}?limit=2&after={ids[1]}", headers=admin_headers)).json()
    assert [k["id"] for k in rest["data"]] == ids[2:]
    assert rest["has_more"] is False


async def test_issue_key_service_stores_a_given_plaintext(
    database_url: str, db: Database, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    settings = make_settings(database_url)
    wanted = generate_key()
    async with db.session() as session:
        row, plaintext = await issue_key_service(
            session, settings, tenant["id"], KeyCreate(name="demo"), plaintext=wanted
        )
        await session.commit()  # the service flushes; its caller commits
        assert plaintext == wanted
        assert row.key_hash == hash_key(wanted, settings.secret_key)
        found = await ApiKeyRepository(session).get_with_tenant_by_hash(row.key_hash)
        assert found is not None
        assert (found[0].id, found[1].id) == (row.id, tenant["id"])

        with pytest.raises(ConflictError):
            await issue_key_service(
                session, settings, tenant["id"], KeyCreate(name="again"), plaintext=wanted
            )
        bad_checksum = wanted[:-1] + ("A" if wanted[-1] != "A" else "B")
        for malformed in ("gw_short", bad_checksum, "sk-" + wanted[3:]):
            with pytest.raises(ValidationFailedError):
                await issue_key_service(
                    session, settings, tenant["id"], KeyCreate(name="x"), plaintext=malformed
                )
        with pytest.raises(NotFoundError):
            await issue_key_service(session, settings, "ten_nope", KeyCreate(name="x"))
        count = len((await session.exec(select(ApiKey))).all())
    assert count == 1


async def test_touch_last_used_shows_in_the_list(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    tenant = await make_tenant()
    key = await issue_key(tenant["id"])
    used = utcnow().replace(microsecond=0)
    async with db.unit() as session:  # repositories never commit: the unit does
        repository = ApiKeyRepository(session)
        await repository.touch_last_used(key["id"], used)
        # An older, late-arriving touch never moves the time backwards.
        await repository.touch_last_used(key["id"], used - timedelta(minutes=5))
    listed = await client.get(f"/admin/tenants/{tenant['id']}/keys", headers=admin_headers)
    expected = used.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert listed.json()["data"][0]["last_used_at"] == expected


async def test_get_with_tenant_by_hash_unknown_is_none(db: Database) -> None:
    async with db.session() as session:
        found = await ApiKeyRepository(session).get_with_tenant_by_hash(
            hash_key(generate_key(), SECRET_KEY)
        )
    assert found is None
