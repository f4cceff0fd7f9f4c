"""Admin users: created by the CLI, log in for a short-lived admin JWT; viewers only read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from jose import jwt
from sqlalchemy import text

from tests.conftest import SECRET_KEY, make_settings, started_app
from tests.identity.conftest import ADMIN, bearer, claims, sign

GATEWAY = str(Path(sys.executable).with_name("gateway"))
ADMIN_PW = "correct-horse-battery"
VIEWER_PW = "viewer-password-42"


def _cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_DATABASE_URL=url, GATEWAY_ENV="development")
    return subprocess.run(
        [GATEWAY, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


async def _app_client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for app in started_app(make_settings(url)):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as c:
            yield c


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    from gateway.core.db import Database
    from tenants.admin.users import create_user

    db = Database(sqlite_url)
    async with db.unit() as session:  # services never commit: the unit does
        await create_user(session, "alice", "admin", ADMIN_PW)
        await create_user(session, "victor", "viewer", VIEWER_PW)
    await db.dispose()
    async for c in _app_client(sqlite_url):
        yield c


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/admin/login", data={"username": username, "password": password})


async def test_cli_creates_users_and_refuses_bad_input(sqlite_url: str) -> None:
    r = _cli(sqlite_url, "admin", "create-user", "bob", "--role", "admin", "--password", ADMIN_PW)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["role"] == "admin"
    # Without --password the CLI prompts (twice, hidden).
    r = _cli(
        sqlite_url,
        "admin",
        "create-user",
        "vera",
        "--role",
        "viewer",
        stdin=f"{VIEWER_PW}\n{VIEWER_PW}\n",
    )
    assert r.returncode == 0, r.stderr
    r = _cli(sqlite_url, "admin", "create-user", "bob", "--role", "admin", "--password", ADMIN_PW)
    assert r.returncode == 1 and "exists" in r.stderr and "Traceback" not in r.stderr
    r = _cli(sqlite_url, "admin", "create-user", "x", "--role", "root", "--password", ADMIN_PW)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
    async for client in _app_client(sqlite_url):
        assert (await _login(client, "bob", ADMIN_PW)).status_code == 200
        r = await _login(client, "vera", VIEWER_PW)
        assert r.status_code == 200
        assert jwt.get_unverified_claims(r.json()["access_token"])["role"] == "viewer"


async def test_service_refuses_bad_input(client: httpx.AsyncClient, sqlite_url: str) -> None:
    from gateway.core.db import Database
    from gateway.core.errors import ValidationFailedError
    from tenants.admin.users import create_user

    db = Database(sqlite_url)
    try:
        for args in (
            ("carol", "root", ADMIN_PW),
            ("carol", "admin", "short"),
            ("carol", "admin", " " * 12),  # twelve blanks were a password
            ("carol", "admin", "  abc  \t\n   "),
            ("Bad Name", "admin", ADMIN_PW),
        ):
            async with db.session() as session:
                with pytest.raises(ValidationFailedError):
                    await create_user(session, *args)
    finally:
        await db.dispose()


async def test_login_issues_a_short_lived_admin_token(client: httpx.AsyncClient) -> None:
    r = await _login(client, "alice", ADMIN_PW)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert r.headers["cache-control"] == "no-store"  # a token response (RFC 6749 §5.1)
    decoded = jwt.get_unverified_claims(body["access_token"])
    assert decoded["aud"] == "agent-gateway-admin" and decoded["exp"] - time.time() <= 900
    headers = bearer(body["access_token"])
    r = await client.post("/admin/tenants", json={"slug": "acme", "name": "A"}, headers=headers)
    assert r.status_code == 201
    events = (await client.get("/admin/audit?action=tenant.create", headers=headers)).json()
    assert events["data"][0]["actor"] == "user:alice"
    # The bootstrap admin token keeps working.
    assert (await client.get("/admin/tenants", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong-password-000"), ("nobody", ADMIN_PW), ("alice", ""), ("", "")],
)
async def test_bad_logins_are_401_or_422(
    client: httpx.AsyncClient, username: str, password: str
) -> None:
    r = await _login(client, username, password)
    assert r.status_code in (401, 422)
    assert "access_token" not in r.text
    if username and password:
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_a_login_sent_as_json_says_it_takes_a_form(client: httpx.AsyncClient) -> None:
    # OAuth2's password flow is a form: a JSON body said only "username: Field required".
    r = await client.post("/admin/login", json={"username": "alice", "password": ADMIN_PW})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "application/x-www-form-urlencoded" in message and "username" in message, message
    assert "access_token" not in r.text


async def test_viewer_can_only_read(client: httpx.AsyncClient) -> None:
    token = (await _login(client, "victor", VIEWER_PW)).json()["access_token"]
    viewer = bearer(token)
    assert (await client.get("/admin/tenants", headers=viewer)).status_code == 200
    assert (await client.get("/admin/audit", headers=viewer)).status_code == 200
    tenant = (
        await client.post("/admin/tenants", json={"slug": "acme", "name": "A"}, headers=ADMIN)
    ).json()
    for method, path in [
        ("POST", "/admin/tenants"),
        ("PATCH", f"/admin/tenants/{tenant['id']}"),
        ("DELETE", f"/admin/tenants/{tenant['id']}"),
        ("POST", f"/admin/tenants/{tenant['id']}/keys"),
        ("PUT", f"/admin/tenants/{tenant['id']}/jwt"),
    ]:
        r = await client.request(method, path, json={"name": "x"}, headers=viewer)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "read_only_role"
    assert (await client.get(f"/admin/tenants/{tenant['id']}", headers=ADMIN)).status_code == 200


async def test_forged_expired_and_tenant_tokens(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    base = {
        "iss": "agent-gateway",
        "aud": "agent-gateway-admin",
        "sub": "usr_x",
        "name": "eve",
        "role": "admin",
    }
    forged = jwt.encode({**base, "exp": now + 60}, "not-the-key", algorithm="HS256")
    assert (await client.get("/admin/tenants", headers=bearer(forged))).status_code == 401
    from tenants.admin.tokens import _signing_key

    key = _signing_key(make_settings("sqlite://", secret_key=SECRET_KEY))
    expired = jwt.encode({**base, "exp": now - 5}, key, algorithm="HS256")
    assert (await client.get("/admin/tenants", headers=bearer(expired))).status_code == 401
    # Well signed, but for no existing user (e.g. deleted since): 401.
    orphan = jwt.encode({**base, "exp": now + 60}, key, algorithm="HS256")
    assert (await client.get("/admin/tenants", headers=bearer(orphan))).status_code == 401
    login = (await _login(client, "alice", ADMIN_PW)).json()["access_token"]
    alice_id = jwt.get_unverified_claims(login)["sub"]
    valid = jwt.encode({**base, "sub": alice_id, "exp": now + 60}, key, algorithm="HS256")
    assert (await client.get("/admin/tenants", headers=bearer(valid))).status_code == 200
    # A tenant-shaped JWT that no tenant accepts (no issuer "acme" here) is a bad credential:
    # 401. (A valid end-user JWT is 403: tests/identity/test_authorization_matrix.py.)
    tenant_jwt = sign(claims("acme"), "s" * 64, "HS256")
    r = await client.get("/admin/tenants", headers=bearer(tenant_jwt))
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_an_admin_token_is_refused_the_moment_it_expires(
    client: httpx.AsyncClient,
) -> None:
    """No leeway, as for end-user JWTs: a token whose `exp` passed a fraction of a second ago
    is 401 (python-jose alone compares whole seconds and accepts it for up to a second)."""
    from tenants.admin.tokens import _signing_key

    login = (await _login(client, "alice", ADMIN_PW)).json()["access_token"]
    live = jwt.get_unverified_claims(login)
    while time.time() % 1 < 0.2:  # well past a whole second, so int(now) == exp below
        time.sleep(0.05)
    key = _signing_key(make_settings("sqlite://", secret_key=SECRET_KEY))
    just_expired = jwt.encode({**live, "exp": int(time.time())}, key, algorithm="HS256")
    r = await client.get("/admin/tenants", headers=bearer(just_expired))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["type"] == "authentication_error"


async def test_a_login_carrying_a_tenant_credential_is_403(client: httpx.AsyncClient) -> None:
    """As on every /admin route: a valid tenant key (either header) is 403 at login too, and
    no admin token is issued; a bad one is the usual 401."""
    tenant = await client.post("/admin/tenants", json={"slug": "acme", "name": "A"}, headers=ADMIN)
    url = f"/admin/tenants/{tenant.json()['id']}/keys"
    key = (await client.post(url, json={"name": "k"}, headers=ADMIN)).json()["key"]
    form = {"username": "alice", "password": ADMIN_PW}
    for headers in (bearer(key), {"X-API-Key": key}):
        r = await client.post("/admin/login", data=form, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "tenant_credential"
        assert "access_token" not in r.text
    r = await client.post("/admin/login", data=form, headers={"X-API-Key": "gw_nope"})
    assert r.status_code == 401


async def test_answers_holding_a_secret_are_never_cached(client: httpx.AsyncClient) -> None:
    tenant = await client.post("/admin/tenants", json={"slug": "acme", "name": "A"}, headers=ADMIN)
    base = f"/admin/tenants/{tenant.json()['id']}"
    for r in (
        await client.post(f"{base}/keys", json={"name": "k"}, headers=ADMIN),
        await client.put(
            f"{base}/jwt", json={"mode": "hs256", "issuer": "https://acme.example"}, headers=ADMIN
        ),
        await client.post(f"{base}/tool-secret", headers=ADMIN),
        await _login(client, "alice", ADMIN_PW),
    ):
        assert r.status_code in (200, 201), r.text
        assert r.headers["cache-control"] == "no-store", r.request.url


async def test_passwords_are_stored_as_argon2_only(
    client: httpx.AsyncClient, sqlite_url: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(sqlite_url)
    async with engine.connect() as conn:
        hashes = (await conn.execute(text("SELECT password_hash FROM admin_users"))).scalars().all()
        audit = (await conn.execute(text("SELECT actor, action, details FROM audit_events"))).all()
    await engine.dispose()
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)
    assert "bcrypt" not in str(hashes) and "$2b$" not in str(hashes)
    assert ADMIN_PW not in str(hashes) and VIEWER_PW not in str(audit)
    assert [(a, b) for a, b, _ in audit] == [("cli", "user.create")] * 2


async def test_deleting_or_demoting_a_user_bites_on_their_live_token(sqlite_url: str) -> None:
    """An admin JWT is good for 15 minutes, but the operator need not wait: `gateway admin
    delete-user` refuses the user's tokens at once, `set-role viewer` makes them read-only at
    once (both audited); unknown users are a clean CLI error."""
    for name, pw in (("mallory", ADMIN_PW), ("dave", ADMIN_PW)):
        r = _cli(sqlite_url, "admin", "create-user", name, "--role", "admin", "--password", pw)
        assert r.returncode == 0, r.stderr
    async for client in _app_client(sqlite_url):
        mallory = bearer((await _login(client, "mallory", ADMIN_PW)).json()["access_token"])
        dave = bearer((await _login(client, "dave", ADMIN_PW)).json()["access_token"])
        body = {"slug": "acme", "name": "A"}
        assert (await client.post("/admin/tenants", json=body, headers=dave)).status_code == 201

        r = _cli(sqlite_url, "admin", "set-role", "dave", "--role", "viewer")
        assert r.returncode == 0, r.stderr
        body = {"slug": "beta", "name": "B"}
        r = await client.post("/admin/tenants", json=body, headers=dave)
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only_role"
        assert (await client.get("/admin/tenants", headers=dave)).status_code == 200

        assert (await client.get("/admin/tenants", headers=mallory)).status_code == 200
        r = _cli(sqlite_url, "admin", "delete-user", "mallory")
        assert r.returncode == 0, r.stderr
        r = await client.get("/admin/tenants", headers=mallory)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert (await _login(client, "mallory", ADMIN_PW)).status_code == 401

        audit = (await client.get("/admin/audit?actor=cli", headers=ADMIN)).json()["data"]
        actions = [(e["action"], e["details"]) for e in audit]
        assert ("user.update", {"username": "dave", "role": "viewer"}) in actions
        assert ("user.delete", {"username": "mallory"}) in actions
    r = _cli(sqlite_url, "admin", "delete-user", "mallory")
    assert r.returncode == 1 and "No admin user" in r.stderr and "Traceback" not in r.stderr
    r = _cli(sqlite_url, "admin", "set-role", "dave", "--role", "root")
    assert r.returncode == 1 and "error:" in r.stderr
