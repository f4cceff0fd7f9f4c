"""Key rotation, `last_used_at` without a write per request, tenant deletion, the audit log,
and secrets that never show up again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import event

from tests.conftest import make_settings
from tests.gateway.conftest import gateway_for
from tests.identity.conftest import ADMIN, Gateway, bearer, claims, enable_jwt, sign


async def test_rotation_overlap_then_expiry(gw: Gateway) -> None:
    a = await gw.create_tenant("acme")
    keys = f"/admin/tenants/{a.id}/keys"
    new = (await gw.client.post(keys, json={"name": "new"}, headers=ADMIN)).json()
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    r = await gw.client.patch(f"{keys}/{a.key_id}", json={"expires_at": until}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["expires_at"] is not None
    for headers in (a.headers, bearer(new["key"])):  # both work during the overlap
        assert (await gw.client.get("/v1/agents", headers=headers)).status_code == 200
    await asyncio.sleep(1.1)
    assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 401
    assert (await gw.client.get("/v1/agents", headers=bearer(new["key"]))).status_code == 200
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    r = await gw.client.patch(f"{keys}/{new['id']}", json={"expires_at": past}, headers=ADMIN)
    assert r.status_code == 422
    # A field the route does not take is what the error names (not the one left out).
    r = await gw.client.patch(f"{keys}/{new['id']}", json={"name": "x"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["param"] == "name", r.text
    await gw.client.delete(f"{keys}/{new['id']}", headers=ADMIN)
    r = await gw.client.patch(f"{keys}/{new['id']}", json={"expires_at": None}, headers=ADMIN)
    assert r.status_code == 409


async def test_last_used_at_is_batched(gw: Gateway) -> None:
    a = await gw.create_tenant("acme")
    writes: list[str] = []
    engine = gw.app.state.db.engine.sync_engine

    def spy(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", spy)
    try:
        for _ in range(20):
            assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 200
        assert writes == []  # no write per request
        await gw.app.state.recorder.flush_key_marks()
        assert len(writes) == 1
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    listed = (await gw.client.get(f"/admin/tenants/{a.id}/keys", headers=ADMIN)).json()["data"]
    assert listed[0]["last_used_at"] is not None


async def test_a_key_refused_on_the_admin_api_is_not_marked_used(gw: Gateway) -> None:
    """The admin API takes no tenant credential: a key sent there (403) was not used, so its
    `last_used_at` (what an operator reads before retiring a key) does not move."""
    a = await gw.create_tenant("acme")
    keys = f"/admin/tenants/{a.id}/keys"
    issued = (await gw.client.post(keys, json={"name": "idle"}, headers=ADMIN)).json()
    for headers in (bearer(issued["key"]), {"X-API-Key": issued["key"]}):
        r = await gw.client.get("/admin/tenants", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_credential"
    login = {"username": "x", "password": "y"}
    r = await gw.client.post("/admin/login", data=login, headers=bearer(issued["key"]))
    assert r.status_code == 403
    await gw.app.state.recorder.flush_key_marks()
    listed = (await gw.client.get(keys, headers=ADMIN)).json()["data"]
    assert [k["last_used_at"] for k in listed if k["id"] == issued["id"]] == [None]
    # The same key on /v1 is a use.
    assert (await gw.client.get("/v1/agents", headers=bearer(issued["key"]))).status_code == 200
    await gw.app.state.recorder.flush_key_marks()
    listed = (await gw.client.get(keys, headers=ADMIN)).json()["data"]
    assert [k["last_used_at"] is not None for k in listed if k["id"] == issued["id"]] == [True]


async def test_deleting_a_tenant_revokes_everything_at_once(gw: Gateway) -> None:
    a = await gw.create_tenant("acme")
    secret = (await enable_jwt(gw, a.id, {"mode": "hs256", "issuer": "acme"}))["secret"]
    token = bearer(sign(claims("acme"), secret, "HS256"))
    run = "/v1/agents/assistant/runs"
    for headers in (a.headers, token):
        assert (await gw.client.post(run, json={"input": "hi"}, headers=headers)).status_code == 200
    assert (await gw.client.delete(f"/admin/tenants/{a.id}", headers=ADMIN)).status_code == 204
    # No waiting for a TTL: the deletion invalidated the caches.
    for headers in (a.headers, token):
        assert (await gw.client.post(run, json={"input": "hi"}, headers=headers)).status_code == 401
    await gw.flush_usage()
    # Its usage stays readable by id for billing; nothing else under its path.
    r = await gw.client.get("/admin/usage", params={"tenant_id": a.id}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["totals"]["runs"] == 2
    assert (await gw.client.get(f"/admin/tenants/{a.id}/usage", headers=ADMIN)).status_code == 404
    assert (await gw.client.get(f"/admin/tenants/{a.id}/jwt", headers=ADMIN)).status_code == 404


async def test_every_admin_mutation_is_audited_without_secrets(gw: Gateway) -> None:
    a = await gw.create_tenant("acme")  # tenant.create, key.create, agent.create
    keys = f"/admin/tenants/{a.id}/keys"
    new = (await gw.client.post(keys, json={"name": "n"}, headers=ADMIN)).json()
    await gw.client.patch(f"{keys}/{new['id']}", json={"expires_at": None}, headers=ADMIN)
    await gw.client.delete(f"{keys}/{new['id']}", headers=ADMIN)
    secret = (await enable_jwt(gw, a.id, {"mode": "hs256", "issuer": "acme"}))["secret"]
    await gw.client.delete(f"/admin/tenants/{a.id}/jwt", headers=ADMIN)
    agent = f"/admin/tenants/{a.id}/agents/assistant"
    await gw.client.put(agent, json={"model": "v2"}, headers=ADMIN)
    await gw.client.post(f"{agent}/versions/1/activate", headers=ADMIN)
    await gw.client.delete(agent, headers=ADMIN)
    await gw.client.patch(
        f"/admin/tenants/{a.id}",
        json={"status": "suspended"},
        headers={**ADMIN, "X-Request-ID": "req-audit-1"},
    )
    await gw.client.delete(f"/admin/tenants/{a.id}", headers=ADMIN)
    body = (await gw.client.get(f"/admin/audit?tenant_id={a.id}&limit=100", headers=ADMIN)).json()
    actions = [e["action"] for e in reversed(body["data"])]  # newest first
    assert actions == [
        "tenant.create",
        "key.create",
        "agent.create",
        "key.create",
        "key.update",
        "key.revoke",
        "jwt.put",
        "jwt.delete",
        "agent.put",
        "agent.activate",
        "agent.delete",
        "tenant.update",
        "tenant.delete",
    ]
    assert {e["actor"] for e in body["data"]} == {"admin-token"}
    suspend = next(e for e in body["data"] if e["action"] == "tenant.update")
    assert suspend["request_id"] == "req-audit-1" and suspend["details"]["status"] == "suspended"
    text = str(body)
    assert secret not in text and new["key"] not in text and a.key not in text
    # Filters and pagination.
    page = (await gw.client.get("/admin/audit?action=key.revoke", headers=ADMIN)).json()
    assert [e["target_id"] for e in page["data"]] == [new["id"]]
    first = (await gw.client.get("/admin/audit?limit=5", headers=ADMIN)).json()
    assert first["has_more"] and len(first["data"]) == 5
    after = first["data"][-1]["id"]
    rest = (await gw.client.get(f"/admin/audit?limit=100&after={after}", headers=ADMIN)).json()
    assert len(rest["data"]) == len(actions) - 5 and not rest["has_more"]
    assert rest["data"][0]["id"] < after  # the next page holds the older events
    assert [e["action"] for e in first["data"]] == actions[::-1][:5]
    assert (await gw.client.get("/admin/audit?actor=user:nobody", headers=ADMIN)).json()[
        "data"
    ] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (await gw.client.get(f"/admin/audit?since={future}", headers=ADMIN)).json()["data"] == []
    # Not RFC 3339 with an offset, or outside years 1-9999 once in UTC: 422 (those were 500s).
    for since in ("2026-01-01", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        r = await gw.client.get("/admin/audit", params={"since": since}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["param"] == "since", (since, r.text)
    # Keys are listed without their secret parts; metrics never carry them.
    listed = str((await gw.client.get(keys, headers=ADMIN)).json())
    assert new["key"] not in listed and "key_hash" not in listed
    metrics = (await gw.client.get("/metrics")).text
    assert secret not in metrics and new["key"] not in metrics


@pytest.mark.parametrize(
    "overrides",
    [
        {"env": "production", "secret_key": "dev-insecure-secret-key-change-me-0000000000"},
        {"env": "production", "secret_key": "short-secret"},
        {"env": "test", "secret_key": "changeme"},
        {"env": "production", "admin_token": "tiny"},
        {"env": "production", "admin_token": None},
    ],
)
def test_startup_refuses_placeholder_secrets(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        make_settings("sqlite://", **overrides)


def test_development_allows_the_placeholder() -> None:
    settings = make_settings(
        "sqlite://", env="development", secret_key="changeme", admin_token=None
    )
    assert settings.secret_key == "changeme"


@pytest.fixture
async def gw_any_db(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    """A gateway on SQLite and on PostgreSQL."""
    async for gateway in gateway_for(database_url, mock_llm_base_url):
        yield gateway


async def test_a_change_and_its_audit_event_commit_together(
    gw_any_db: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin change whose audit event cannot be written does not happen: a 500, and the
    tenant is not created, the key is not revoked (no change without its event)."""
    import tenants.audit.service as audit_service

    gw = gw_any_db
    a = await gw.create_tenant("acme")
    before = (await gw.client.get("/admin/audit?limit=100", headers=ADMIN)).json()["data"]
    taken = before[-1]["id"]
    monkeypatch.setattr(audit_service, "new_id", lambda prefix: taken)  # the insert collides
    # as a real client sees it: the 500 response (the test transport would re-raise the error)
    transport = httpx.ASGITransport(app=gw.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        r = await client.post("/admin/tenants", json={"slug": "beta", "name": "B"}, headers=ADMIN)
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "api_error"
        r = await client.delete(f"/admin/tenants/{a.id}/keys/{a.key_id}", headers=ADMIN)
        assert r.status_code == 500
    monkeypatch.undo()

    tenants = (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
    assert [t["slug"] for t in tenants] == ["acme"]
    assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 200
    after = (await gw.client.get("/admin/audit?limit=100", headers=ADMIN)).json()["data"]
    assert after == before
    # and with the audit log writable again, the same calls work and are recorded
    r = await gw.client.delete(f"/admin/tenants/{a.id}/keys/{a.key_id}", headers=ADMIN)
    assert r.status_code == 204
    assert (await gw.client.get("/v1/agents", headers=a.headers)).status_code == 401
    actions = [
        e["action"]
        for e in (await gw.client.get("/admin/audit?limit=100", headers=ADMIN)).json()["data"]
    ]
    assert actions[0] == "key.revoke"  # newest first
