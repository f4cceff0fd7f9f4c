"""CORS for tenant apps in browsers (GATEWAY_CORS_ALLOW_ORIGINS): off by default; when set, a
preflight from an allowed origin is answered and a response exposes the headers a page needs."""

from __future__ import annotations

from tests.gateway.conftest import gateway_for

ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    # What OpenAI's JavaScript client sends besides the credential.
    "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os,x-stainless-lang",
}


async def test_no_cors_unless_configured(sqlite_url: str, mock_llm_base_url: str) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url):
        tenant = await gw.create_tenant("no-cors")
        r = await gw.client.get("/v1/agents", headers={**tenant.headers, "Origin": ORIGIN})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        r = await gw.client.options("/v1/agents/assistant/runs", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in r.headers


async def test_an_allowed_origin_gets_preflights_and_readable_headers(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    origins = f"{ORIGIN}, https://other.example.com"
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, cors_allow_origins=origins):
        tenant = await gw.create_tenant("cors")
        r = await gw.client.options("/v1/agents/assistant/runs", headers=PREFLIGHT)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-stainless-os" in allowed
        assert "access-control-allow-credentials" not in r.headers  # bearer tokens, no cookies

        r = await gw.client.get("/v1/agents", headers={**tenant.headers, "Origin": ORIGIN})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "x-ratelimit-remaining-requests" in exposed and "retry-after" in exposed

        elsewhere = {**PREFLIGHT, "Origin": "https://evil.example.com"}
        r = await gw.client.options("/v1/agents/assistant/runs", headers=elsewhere)
        assert "access-control-allow-origin" not in r.headers
        assert r.status_code == 400  # refused in the API's error shape, not plain text
        assert r.json()["error"]["code"] == "cors_refused"
        assert "origin" in r.json()["error"]["message"]
