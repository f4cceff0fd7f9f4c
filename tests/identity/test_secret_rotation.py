"""Rotating GATEWAY_SECRET_KEY: with the old key in GATEWAY_SECRET_KEY_OLD nothing a tenant or
an admin holds stops working; API keys move to the new key at their first use, stored secrets
with `gateway secrets re-encrypt`; then the old key can go."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select

from tests.conftest import gateway_env, make_settings, started_app
from tests.gateway.conftest import ADMIN, AGENT_SPEC
from tests.identity.conftest import bearer, claims, sign

OLD_KEY = "old-secret-key-0123456789abcdef0123456789"
NEW_KEY = "new-secret-key-0123456789abcdef0123456789"
ISSUER = "https://rotate.example"
GATEWAY = str(Path(sys.executable).parent / "gateway")


@asynccontextmanager
async def gateway(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    async for app in started_app(make_settings(database_url, **settings)):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            yield client


async def key_hashes(database_url: str) -> dict[str, str]:
    from sqlalchemy import text

    from gateway.core.db import Database

    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, key_hash FROM api_keys"))).all()
    finally:
        await db.dispose()
    return {row[0]: row[1] for row in rows}


async def readable_with(database_url: str, key: str) -> int:
    """How many stored secrets (all kinds) `key` alone decrypts."""
    from gateway.core.db import Database
    from tenants.rotation import ENCRYPTED
    from tenants.secretbox import SecretUnreadableError, unseal

    db = Database(database_url)
    readable = 0
    try:
        async with db.session() as session:
            for model, column, purpose in ENCRYPTED:
                for row in (await session.exec(select(model))).all():
                    if getattr(row, column) is None:
                        continue
                    try:
                        unseal(getattr(row, column), key, purpose)
                        readable += 1
                    except SecretUnreadableError:
                        pass
    finally:
        await db.dispose()
    return readable


async def test_rotation_keeps_every_credential_working(database_url: str) -> None:
    from tenants.api_key.keys import hash_key

    # Before: everything made under the old key.
    async with gateway(database_url, secret_key=OLD_KEY) as client:
        r = await client.post("/admin/tenants", json={"slug": "rot", "name": "R"}, headers=ADMIN)
        tenant_id = r.json()["id"]
        await client.put(
            f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC, headers=ADMIN
        )
        used = (
            await client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "u"}, headers=ADMIN)
        ).json()
        idle = (
            await client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "i"}, headers=ADMIN)
        ).json()
        r = await client.put(
            f"/admin/tenants/{tenant_id}/jwt",
            json={"mode": "hs256", "issuer": ISSUER},
            headers=ADMIN,
        )
        hs256 = r.json()["secret"]
        # The other stored secrets: the tool-signing secret and a tenant upstream's key.
        r = await client.post(f"/admin/tenants/{tenant_id}/tool-secret", headers=ADMIN)
        assert r.status_code == 201, r.text
        upstream = {"base_url": "https://llm.example/v1", "api_key": "sk-upstream-1234"}
        r = await client.put(
            f"/admin/tenants/{tenant_id}/upstreams/main", json=upstream, headers=ADMIN
        )
        assert r.status_code in (200, 201), r.text
    user_jwt = sign(claims(ISSUER), hs256, "HS256")

    def works(r: httpx.Response) -> bool:
        return r.status_code == 200

    # Without the old key nothing made under it works: this is why the rotation keeps it.
    async with gateway(database_url, secret_key=NEW_KEY) as client:
        assert (await client.get("/v1/agents", headers=bearer(used["key"]))).status_code == 401
        assert (await client.get("/v1/agents", headers=bearer(user_jwt))).status_code == 401

    # During the rotation: the new key, the old one accepted.
    async with gateway(database_url, secret_key=NEW_KEY, secret_key_old=OLD_KEY) as client:
        assert works(await client.get("/v1/agents", headers=bearer(used["key"])))
        assert works(await client.get("/v1/agents", headers=bearer(user_jwt)))
        new = (
            await client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "n"}, headers=ADMIN)
        ).json()
        assert works(await client.get("/v1/agents", headers=bearer(new["key"])))
    hashes = await key_hashes(database_url)
    assert hashes[used["id"]] == hash_key(used["key"], NEW_KEY)  # moved at its first use
    assert hashes[idle["id"]] == hash_key(idle["key"], OLD_KEY)  # never presented: not yet
    assert hashes[new["id"]] == hash_key(new["key"], NEW_KEY)

    # Stored secrets move with one command (idempotent, audited).
    env = gateway_env(database_url, GATEWAY_SECRET_KEY=NEW_KEY, GATEWAY_SECRET_KEY_OLD=OLD_KEY)
    for moved, current in ((3, 0), (0, 3)):  # the second run finds nothing left to move
        done = subprocess.run(
            [GATEWAY, "secrets", "re-encrypt"], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "reencrypted": moved,
            "current": current,
            "unreadable": 0,
        }

    assert await readable_with(database_url, NEW_KEY) == 3

    # After: the old key removed. What was used or re-encrypted works; the idle key does not.
    async with gateway(database_url, secret_key=NEW_KEY) as client:
        assert works(await client.get("/v1/agents", headers=bearer(used["key"])))
        assert works(await client.get("/v1/agents", headers=bearer(user_jwt)))
        assert works(await client.get("/v1/agents", headers=bearer(new["key"])))
        assert (await client.get("/v1/agents", headers=bearer(idle["key"]))).status_code == 401
        audit = (await client.get("/admin/audit", headers=ADMIN)).json()["data"]
        assert [e for e in audit if e["action"] == "secrets.reencrypt"]


async def test_admin_jwts_signed_before_the_rotation_stay_valid(database_url: str) -> None:
    from tenants.admin.tokens import issue_admin_token, verify_admin_token

    before = make_settings(database_url, secret_key=OLD_KEY)
    token, _ = issue_admin_token(before, user_id="usr_1", username="ops", role="admin")
    during = make_settings(database_url, secret_key=NEW_KEY, secret_key_old=OLD_KEY)
    after = make_settings(database_url, secret_key=NEW_KEY)
    assert verify_admin_token(token, during) is not None
    assert verify_admin_token(token, after) is None


async def test_a_secret_no_configured_key_reads_is_a_503_not_a_500(
    database_url: str, mock_llm_base_url: str
) -> None:
    """The old key lost (or removed before `secrets re-encrypt`): a run that needs a tenant
    upstream's key or the tool-signing secret is a 503 `secret_unreadable`, the same answer
    whichever secret it is; nothing is sent unsigned."""
    tool = {
        "type": "http",
        "name": "lookup_order",
        "description": "Find an order.",
        "url": "http://127.0.0.1:9/orders",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    settings = {"openai_base_url": mock_llm_base_url, "egress_allow": "127.0.0.0/8"}
    async with gateway(database_url, secret_key=OLD_KEY, **settings) as client:
        r = await client.post("/admin/tenants", json={"slug": "lost", "name": "L"}, headers=ADMIN)
        tenant_id = r.json()["id"]
        agents = f"/admin/tenants/{tenant_id}/agents"
        upstream = {"base_url": mock_llm_base_url, "api_key": "sk-upstream-1234"}
        r = await client.put(
            f"/admin/tenants/{tenant_id}/upstreams/main", json=upstream, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        r = await client.post(f"/admin/tenants/{tenant_id}/tool-secret", headers=ADMIN)
        assert r.status_code == 201, r.text
        for name, spec in (
            ("upstreamed", {**AGENT_SPEC, "upstream": "main"}),
            ("tooled", {**AGENT_SPEC, "tools": [tool]}),
        ):
            r = await client.put(f"{agents}/{name}", json=spec, headers=ADMIN)
            assert r.status_code == 201, r.text
    async with gateway(database_url, secret_key=NEW_KEY, **settings) as client:
        key = (
            await client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}, headers=ADMIN)
        ).json()["key"]
        for agent, text in (("upstreamed", "hi"), ("tooled", "Use lookup_order please")):
            r = await client.post(
                f"/v1/agents/{agent}/runs", json={"input": text}, headers=bearer(key)
            )
            assert r.status_code == 503, (agent, r.text)
            error = r.json()["error"]
            assert (error["type"], error["code"]) == ("service_unavailable", "secret_unreadable")
    # The command that would have moved them says so, and fails (a Job or script notices).
    env = gateway_env(database_url, GATEWAY_SECRET_KEY=NEW_KEY)
    done = subprocess.run(
        [GATEWAY, "secrets", "re-encrypt"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {"reencrypted": 0, "current": 0, "unreadable": 2}
    assert "GATEWAY_SECRET_KEY_OLD" in done.stderr
