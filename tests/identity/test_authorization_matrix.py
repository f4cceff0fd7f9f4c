"""The authorization matrix, as data: every route of the app by every kind of credential.

Routes come from the app itself (OpenAPI paths plus WebSocket routes), so a route added
without a row here fails `test_every_route_has_a_row` with its name. Each row says how the
route is protected; the expected status of each cell follows from that.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.routing import APIWebSocketRoute

from tests.identity.conftest import ADMIN, Gateway, bearer, claims, enable_jwt, sign

CREDENTIALS = (
    "a_key",
    "b_key",
    "a_key_no_scope",
    "a_jwt",
    "admin_token",
    "admin_user",
    "viewer",
    "anonymous",
    "expired_key",
    "revoked_key",
    "forged_key",
    "stray_jwt",
)
TENANT_CREDENTIALS = {"a_key", "b_key", "a_key_no_scope", "a_jwt"}
"""Valid tenant credentials: 403 on an admin route. An expired, revoked, forged or unknown one
is 401 there, like any bad credential (its shape says nothing about whether it is valid)."""
JWT_SCOPES = {"runs", "conversations"}
NO_SCOPE_KEY_SCOPES = {"conversations"}
"""What `a_key_no_scope` holds: every route needing another scope is 403 for it."""


@dataclass(frozen=True)
class Row:
    """How one route is protected and what an allowed caller gets."""

    kind: str
    """`public`, `login`, `tenant` (a /v1 route) or `admin`."""
    ok: int = 200
    """Status for an allowed caller (admin routes are probed on an unknown tenant)."""
    scope: str | None = None
    """Scope a tenant route needs (None: any valid tenant credential)."""
    other_tenant: int | None = None
    """Status for tenant B on A's object (None: same as `ok`)."""
    body: Any = None


ROWS: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row("public"),
    ("GET", "/readyz"): Row("public"),
    ("POST", "/admin/login"): Row("login", ok=422),
    ("GET", "/v1/agents"): Row("tenant", scope="runs"),
    ("POST", "/v1/agents/{name}/runs"): Row(
        "tenant", scope="runs", other_tenant=404, body={"input": "hi"}
    ),
    # Probed in tests/gateway/test_websocket.py (the matrix speaks HTTP only).
    ("WEBSOCKET", "/v1/agents/{name}/ws"): Row("tenant", scope="runs", other_tenant=404),
    ("POST", "/v1/chat/completions"): Row(
        "tenant",
        scope="runs",
        other_tenant=404,
        body={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
    ),
    ("GET", "/v1/models"): Row("tenant", scope="runs"),
    ("GET", "/v1/models/{model}"): Row("tenant", ok=404, scope="runs"),
    ("GET", "/v1/runs/{run_id}"): Row("tenant", ok=404, scope="runs"),
    ("POST", "/v1/runs/{run_id}/actions"): Row(
        "tenant", ok=404, scope="runs", body={"decisions": [{"id": "call_x", "approve": True}]}
    ),
    ("POST", "/v1/conversations"): Row("tenant", ok=201, scope="conversations", body={}),
    ("GET", "/v1/conversations/{conversation_id}"): Row("tenant", ok=404, scope="conversations"),
    ("GET", "/v1/conversations/{conversation_id}/items"): Row(
        "tenant", ok=404, scope="conversations"
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): Row("tenant", ok=404, scope="conversations"),
    ("GET", "/v1/usage"): Row("tenant", scope="usage"),
    ("GET", "/v1/usage/records"): Row("tenant", scope="usage"),
    ("GET", "/v1/limits"): Row("tenant"),
    ("GET", "/admin/tenants"): Row("admin"),
    ("POST", "/admin/tenants"): Row("admin", ok=422, body={}),
    ("GET", "/admin/tenants/{tenant_id}"): Row("admin", ok=404),
    ("PATCH", "/admin/tenants/{tenant_id}"): Row("admin", ok=404, body={}),
    ("DELETE", "/admin/tenants/{tenant_id}"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/keys"): Row("admin", ok=404),
    ("POST", "/admin/tenants/{tenant_id}/keys"): Row("admin", ok=404, body={"name": "k"}),
    ("PATCH", "/admin/tenants/{tenant_id}/keys/{key_id}"): Row(
        "admin", ok=404, body={"expires_at": None}
    ),
    ("DELETE", "/admin/tenants/{tenant_id}/keys/{key_id}"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/agents"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/agents/{name}"): Row("admin", ok=404),
    ("PUT", "/admin/tenants/{tenant_id}/agents/{name}"): Row(
        "admin", ok=404, body={"instructions": "x"}
    ),
    ("DELETE", "/admin/tenants/{tenant_id}/agents/{name}"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/agents/{name}/versions"): Row("admin", ok=404),
    ("POST", "/admin/tenants/{tenant_id}/agents/{name}/versions/{version}/activate"): Row(
        "admin", ok=404
    ),
    ("GET", "/admin/tenants/{tenant_id}/jwt"): Row("admin", ok=404),
    ("PUT", "/admin/tenants/{tenant_id}/jwt"): Row(
        "admin", ok=404, body={"mode": "hs256", "issuer": "probe"}
    ),
    ("DELETE", "/admin/tenants/{tenant_id}/jwt"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/usage"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/tool-secret"): Row("admin", ok=404),
    ("POST", "/admin/tenants/{tenant_id}/tool-secret"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/upstreams"): Row("admin", ok=404),
    ("GET", "/admin/tenants/{tenant_id}/upstreams/{name}"): Row("admin", ok=404),
    ("PUT", "/admin/tenants/{tenant_id}/upstreams/{name}"): Row(
        "admin", ok=404, body={"base_url": "https://llm.example.com/v1", "api_key": "sk-probe"}
    ),
    ("DELETE", "/admin/tenants/{tenant_id}/upstreams/{name}"): Row("admin", ok=404),
    ("GET", "/admin/usage"): Row("admin"),
    ("GET", "/admin/usage/records"): Row("admin"),
    ("GET", "/admin/audit"): Row("admin"),
    ("GET", "/admin/models/prices"): Row("admin"),
    ("GET", "/admin/models/{model}/price"): Row("admin", ok=404),
    ("GET", "/admin/models/{model}/price/history"): Row("admin"),
    ("PUT", "/admin/models/{model}/price"): Row("admin", ok=422, body={}),
    ("DELETE", "/admin/models/{model}/price"): Row("admin", ok=404),
}


def app_routes(gateway: Gateway) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (OpenAPI + WebSockets)."""
    routes = {
        (method.upper(), path)
        for path, operations in gateway.app.openapi()["paths"].items()
        for method in operations
    }
    routes.update(("WEBSOCKET", path) for path in websocket_paths(gateway.app.routes))
    return routes


def websocket_paths(routes: Iterable[Any]) -> Iterator[str]:
    """Full paths of the WebSocket routes, also inside included routers (which FastAPI
    keeps as one lazily expanded route each: `effective_candidates`)."""
    for route in routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIWebSocketRoute):
            mounted = getattr(route, "starlette_route", None) or original  # with its prefix
            yield str(mounted.path)
        candidates = getattr(route, "effective_candidates", None)
        if candidates is not None:
            yield from websocket_paths(candidates())


def expected(row: Row, credential: str, method: str) -> int:
    """The status the matrix demands for one cell."""
    if row.kind == "public":
        return row.ok
    if row.kind == "login":
        # Open to anyone (here without a form: 422), but a tenant credential is refused as on
        # every /admin route (SPEC §7): 403 when valid, 401 when not.
        if credential in TENANT_CREDENTIALS:
            return 403
        if credential in ("expired_key", "revoked_key", "forged_key", "stray_jwt"):
            return 401
        return row.ok
    if row.kind == "admin":
        if credential in TENANT_CREDENTIALS:
            return 403
        if credential in ("anonymous", "expired_key", "revoked_key", "forged_key", "stray_jwt"):
            return 401
        if credential == "viewer" and method != "GET":
            return 403
        return row.ok
    if credential not in ("a_key", "b_key", "a_key_no_scope", "a_jwt"):
        return 401
    if credential == "a_key_no_scope" and row.scope not in (None, *NO_SCOPE_KEY_SCOPES):
        return 403
    if credential == "a_jwt" and row.scope is not None and row.scope not in JWT_SCOPES:
        return 403
    if credential == "b_key" and row.other_tenant is not None:
        return row.other_tenant
    return row.ok


async def _credentials(gw: Gateway) -> dict[str, dict[str, str]]:
    a = await gw.create_tenant("tenant-a")
    b = await gw.create_tenant("tenant-b", agent={"instructions": "B", "model": "mock-model"})
    r = await gw.client.put(
        f"/admin/tenants/{b.id}/agents/assistant", json={"model": "m"}, headers=ADMIN
    )
    await gw.client.delete(f"/admin/tenants/{b.id}/agents/assistant", headers=ADMIN)
    assert r.status_code == 200

    async def key(**fields: Any) -> dict[str, Any]:
        r = await gw.client.post(
            f"/admin/tenants/{a.id}/keys", json={"name": "m", **fields}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    no_scope = await key(scopes=sorted(NO_SCOPE_KEY_SCOPES))
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = await key(expires_at=soon)
    revoked = await key()
    await gw.client.delete(f"/admin/tenants/{a.id}/keys/{revoked['id']}", headers=ADMIN)
    secret = (await enable_jwt(gw, a.id, {"mode": "hs256", "issuer": "tenant-a"}))["secret"]
    from tenants.admin.users import create_user

    async with gw.app.state.db.unit() as session:
        await create_user(session, "root", "admin", "admin-password-1")
        await create_user(session, "reader", "viewer", "viewer-password-1")
    tokens = {}
    for user, password in (("root", "admin-password-1"), ("reader", "viewer-password-1")):
        r = await gw.client.post("/admin/login", data={"username": user, "password": password})
        tokens[user] = r.json()["access_token"]
    await asyncio.sleep(1.1)  # let the expiring key expire
    return {
        "a_key": a.headers,
        "b_key": b.headers,
        "a_key_no_scope": bearer(no_scope["key"]),
        "a_jwt": bearer(sign(claims("tenant-a"), secret, "HS256")),
        "admin_token": ADMIN,
        "admin_user": bearer(tokens["root"]),
        "viewer": bearer(tokens["reader"]),
        "anonymous": {},
        "expired_key": bearer(expiring["key"]),
        "revoked_key": bearer(revoked["key"]),
        "forged_key": bearer(revoked["key"][:-1] + ("A" if revoked["key"][-1] != "A" else "B")),
        "stray_jwt": bearer(sign(claims("tenant-a"), "not-the-secret-" * 4, "HS256")),
    }


def _concrete(path: str, kind: str) -> str:
    values = {
        "name": "assistant",
        "key_id": "key_missing",
        "version": "1",
        "conversation_id": "conv_missing",
        "run_id": "run_missing",
        "model": "probe-model",
    }
    if kind == "admin":
        values["tenant_id"] = "ten_missing"
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_every_route_has_a_row(gw: Gateway) -> None:
    missing = sorted(app_routes(gw) - ROWS.keys())
    assert not missing, (
        f"routes without a row in the authorization matrix: {missing}; add each to ROWS in "
        "tests/identity/test_authorization_matrix.py with how it is protected"
    )
    stale = sorted(ROWS.keys() - app_routes(gw))
    assert not stale, f"rows for routes the app no longer serves: {stale}"


async def test_authorization_matrix(gw: Gateway) -> None:
    credentials = await _credentials(gw)
    mismatches = []
    cells = 0
    for (method, path), row in sorted(ROWS.items()):
        if (method, path) not in app_routes(gw) or method == "WEBSOCKET":
            continue
        url = _concrete(path, row.kind)
        for name, headers in credentials.items():
            r = await gw.client.request(method, url, json=row.body, headers=headers)
            cells += 1
            want = expected(row, name, method)
            if r.status_code != want:
                mismatches.append(
                    f"{method} {path} as {name}: {r.status_code} != {want} {r.text[:120]}"
                )
    assert not mismatches, "\n".join(mismatches)
    assert cells >= len(ROWS) * len(CREDENTIALS) - len(CREDENTIALS)
