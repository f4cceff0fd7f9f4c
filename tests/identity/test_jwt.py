"""End-user JWTs: every rejection is the bad-API-key 401; a valid token runs as its `sub`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt
from sqlalchemy import text

from tests.gateway.conftest import gateway_for
from tests.identity.conftest import (
    ADMIN,
    Gateway,
    KeyPair,
    bearer,
    claims,
    enable_jwt,
    sign,
)

RUN = "/v1/agents/assistant/runs"
BAD_CREDENTIAL = {
    "error": {
        "type": "authentication_error",
        "code": "invalid_api_key",
        "message": "Invalid or missing credential.",
        "param": None,
    }
}
HS_ISS = "https://acme.example/"
RS_ISS = "https://beta.example/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


def _raw_json_token(secret: str, payload: dict[str, Any], claim: str, number: str) -> str:
    """An HS256 token whose `claim` is the literal JSON `number` (null, Infinity, 1e400...)."""
    body = json.dumps({k: v for k, v in payload.items() if k != claim})
    body = body[:-1] + f', "{claim}": {number}}}'
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(body.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _setup(gw: Gateway, rsa_keys: KeyPair) -> tuple[str, str]:
    """acme: HS256 (returns its secret); beta: RS256 public key. Both have `assistant`."""
    acme = await gw.create_tenant("acme")
    beta = await gw.create_tenant("beta")
    secret = (await enable_jwt(gw, acme.id, {"mode": "hs256", "issuer": HS_ISS}))["secret"]
    await enable_jwt(
        gw, beta.id, {"mode": "rs256", "issuer": RS_ISS, "public_key": rsa_keys.public_pem}
    )
    return secret, acme.id


async def test_valid_tokens_run_as_their_subject(
    gw: Gateway, rsa_keys: KeyPair, ec_keys: KeyPair
) -> None:
    secret, acme_id = await _setup(gw, rsa_keys)
    hs = sign(claims(HS_ISS, sub="alice"), secret, "HS256")
    rs = sign(claims(RS_ISS, sub="bob"), rsa_keys.private_pem, "RS256")
    for token in (hs, rs):
        r = await gw.client.post(RUN, json={"input": "hi"}, headers=bearer(token))
        assert r.status_code == 200, r.text
    # An expired token is refused at once, however recently it expired.
    late = sign(claims(HS_ISS, sub="alice", exp=int(time.time()) - 2), secret, "HS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(late))).status_code == 401
    # A token issued by a clock 30 s ahead of ours is fine (`iat` and `nbf` in our future).
    now = int(time.time())
    ahead = sign(claims(HS_ISS, sub="alice", iat=now + 30, nbf=now + 30), secret, "HS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(ahead))).status_code == 200
    # JWT principals have `runs` and `conversations`, not the tenant-wide `usage` report.
    r = await gw.client.get("/v1/usage", headers=bearer(hs))
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    await gw.flush_usage()
    r = await gw.client.get(f"/admin/tenants/{acme_id}/usage?group_by=user", headers=ADMIN)
    assert [(row["user"], row["runs"]) for row in r.json()["data"]] == [("alice", 1)]


async def test_es256_and_jwks_configs_verify(
    gw: Gateway, rsa_keys: KeyPair, ec_keys: KeyPair
) -> None:
    gamma = await gw.create_tenant("gamma")
    delta = await gw.create_tenant("delta")
    await enable_jwt(
        gw, gamma.id, {"mode": "es256", "issuer": "gamma", "public_key": ec_keys.public_pem}
    )
    public_jwk = jwk.construct(rsa_keys.public_pem, "RS256").to_dict()
    await enable_jwt(
        gw, delta.id, {"mode": "rs256", "issuer": "delta", "jwks": {"keys": [public_jwk]}}
    )
    es = sign(claims("gamma"), ec_keys.private_pem, "ES256")
    rs = sign(claims("delta"), rsa_keys.private_pem, "RS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(es))).status_code == 200
    assert (await gw.client.get("/v1/agents", headers=bearer(rs))).status_code == 200
    # The ES256 tenant refuses RS256 even with a valid signature for another tenant's key.
    wrong = sign(claims("gamma"), rsa_keys.private_pem, "RS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(wrong))).status_code == 401


async def test_a_jwks_kid_picks_the_key(gw: Gateway, rsa_keys: KeyPair) -> None:
    """With named JWKS keys, a token's `kid` is checked against that key only: a token signed
    by k2 but naming k1, or naming a key the set lacks, is refused; no kid tries every key."""
    other = KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tenant = await gw.create_tenant("named")
    k1 = {**jwk.construct(rsa_keys.public_pem, "RS256").to_dict(), "kid": "k1"}
    k2 = {**jwk.construct(other.public_pem, "RS256").to_dict(), "kid": "k2"}
    await enable_jwt(
        gw, tenant.id, {"mode": "rs256", "issuer": "named", "jwks": {"keys": [k1, k2]}}
    )

    def token(private: str, kid: str | None) -> str:
        headers = {"kid": kid} if kid is not None else None
        return str(jwt.encode(claims("named"), private, algorithm="RS256", headers=headers))

    status = {}
    for name, signed in {
        "k1 by k1": token(rsa_keys.private_pem, "k1"),
        "k2 by k2": token(other.private_pem, "k2"),
        "no kid": token(other.private_pem, None),
        "k1 by k2": token(other.private_pem, "k1"),
        "unknown kid": token(rsa_keys.private_pem, "k9"),
    }.items():
        status[name] = (await gw.client.get("/v1/agents", headers=bearer(signed))).status_code
    assert status == {
        "k1 by k1": 200,
        "k2 by k2": 200,
        "no kid": 200,
        "k1 by k2": 401,
        "unknown kid": 401,
    }


def _rejected_tokens(secret: str, rsa_keys: KeyPair, ec_keys: KeyPair) -> dict[str, str]:
    now = int(time.time())
    valid_rs = sign(claims(RS_ISS), rsa_keys.private_pem, "RS256")
    head, payload, signature = valid_rs.split(".")
    tampered_claims = {**claims(RS_ISS), "sub": "someone-else"}
    tampered = f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{signature}"
    tokens = {
        f"alg {alg}": _raw_token({"alg": alg, "typ": "JWT"}, claims(HS_ISS), None)
        for alg in ("none", "None", "NONE", "nOnE")
    }
    tokens |= {
        "key confusion: HS256 with the RSA public key": _raw_token(
            {"alg": "HS256", "typ": "JWT"}, claims(RS_ISS), rsa_keys.public_pem.encode()
        ),
        "RS tenant, ES256 token": sign(claims(RS_ISS), ec_keys.private_pem, "ES256"),
        "RS tenant, RS512 token": sign(claims(RS_ISS), rsa_keys.private_pem, "RS512"),
        "HS tenant, HS512 token": sign(claims(HS_ISS), secret, "HS512"),
        "wrong secret": sign(claims(HS_ISS), "x" * 64, "HS256"),
        "wrong aud": sign(claims(HS_ISS, aud="someone-else"), secret, "HS256"),
        "missing aud": sign(claims(HS_ISS, aud=None), secret, "HS256"),
        "missing iss": sign(claims(HS_ISS, iss=None), secret, "HS256"),
        "unknown iss": sign(claims("https://unknown.example/"), secret, "HS256"),
        "other tenant's iss": sign(claims(RS_ISS), secret, "HS256"),
        "missing sub": sign(claims(HS_ISS, sub=None), secret, "HS256"),
        "empty sub": sign(claims(HS_ISS, sub=""), secret, "HS256"),
        "NUL in sub": sign(claims(HS_ISS, sub="a\x00b"), secret, "HS256"),
        "sub over 256": sign(claims(HS_ISS, sub="u" * 257), secret, "HS256"),
        "missing exp": sign(claims(HS_ISS, exp=None), secret, "HS256"),
        "expired": sign(claims(HS_ISS, exp=now - 120), secret, "HS256"),
        "just expired": sign(claims(HS_ISS, exp=now - 1), secret, "HS256"),
        "exp as a string": sign(claims(HS_ISS, exp=str(now + 300)), secret, "HS256"),
        "unknown crit header": jwt.encode(
            claims(HS_ISS), secret, algorithm="HS256", headers={"crit": ["exp-ext"], "exp-ext": 1}
        ),
        "nbf in the future": sign(claims(HS_ISS, nbf=now + 300), secret, "HS256"),
        "nbf not a number": sign(claims(HS_ISS, nbf="soon"), secret, "HS256"),
        "iat in the future": sign(claims(HS_ISS, iat=now + 300), secret, "HS256"),
        "iat not an integer": sign(claims(HS_ISS, iat="yesterday"), secret, "HS256"),
        "tampered payload": tampered,
        # NumericDates that are not finite numbers (python-jose's int() raised: a 500).
        **{
            f"{name} {text}": _raw_json_token(secret, claims(HS_ISS), name, text)
            for name in ("exp", "iat", "nbf")
            # An integer of 400 digits has no float: it was a 500 ("int too large").
            for text in ("null", "Infinity", "-Infinity", "NaN", "1e400", "9" * 400)
        },
        # No leeway on exp, to the fraction of a second (python-jose truncates to seconds).
        "expired half a second ago": sign(claims(HS_ISS, exp=time.time() - 0.5), secret, "HS256"),
        "over 8 KB": sign(claims(HS_ISS, pad="p" * 8200), secret, "HS256"),
        "garbage": "a.b.c",
        "not a jwt": "hello",
    }
    assert payload  # the untouched payload segment exists
    return tokens


async def test_every_rejected_token_gets_the_bad_key_401(
    gw: Gateway, rsa_keys: KeyPair, ec_keys: KeyPair
) -> None:
    secret, _ = await _setup(gw, rsa_keys)
    bad_key = await gw.client.get("/v1/agents", headers=bearer("gw_" + "A" * 38))
    assert bad_key.status_code == 401 and bad_key.json() == BAD_CREDENTIAL
    seen = {}
    assert bad_key.headers["www-authenticate"] == "Bearer"  # RFC 9110: the scheme it wants
    for name, token in _rejected_tokens(secret, rsa_keys, ec_keys).items():
        r = await gw.client.post(RUN, json={"input": "hi"}, headers=bearer(token))
        seen[name] = (r.status_code, r.json(), r.headers.get("www-authenticate"))
    assert seen == {name: (401, BAD_CREDENTIAL, "Bearer") for name in seen}


async def test_jwt_config_api(gw: Gateway, rsa_keys: KeyPair) -> None:
    acme = await gw.create_tenant("acme")
    other = await gw.create_tenant("other")
    url = f"/admin/tenants/{acme.id}/jwt"
    created = await enable_jwt(gw, acme.id, {"mode": "hs256", "issuer": "acme"})
    assert created["algorithm"] == "HS256" and created["audience"] == "agent-gateway"
    assert len(base64.urlsafe_b64decode(created["secret"] + "==")) >= 32
    shown = (await gw.client.get(url, headers=ADMIN)).json()
    assert shown["secret"] is None and created["secret"] not in json.dumps(shown)
    async with gw.app.state.db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT secret_encrypted FROM jwt_configs"))).scalar()
    assert stored and created["secret"] not in stored
    # Issuers are unique across tenants.
    r = await gw.client.put(
        f"/admin/tenants/{other.id}/jwt", json={"mode": "hs256", "issuer": "acme"}, headers=ADMIN
    )
    assert r.status_code == 409
    weak = KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 (refused)
    weak_jwk = jwk.construct(weak.public_pem, "RS256").to_dict()
    named = {**jwk.construct(rsa_keys.public_pem, "RS256").to_dict(), "kid": "k1"}
    # Each refusal names the field to fix (`param`), as every other 422 does.
    for body, param in (
        ({"mode": "hs256", "issuer": "x", "public_key": rsa_keys.public_pem}, "public_key"),
        ({"mode": "hs256", "issuer": "x", "jwks": {"keys": []}}, "jwks"),
        ({"mode": "rs256", "issuer": "x"}, "public_key"),
        (
            {"mode": "es256", "issuer": "x", "public_key": rsa_keys.public_pem, "jwks": {}},
            "jwks",
        ),
        ({"mode": "rs256", "issuer": "x", "public_key": "not a pem"}, "public_key"),
        ({"mode": "rs256", "issuer": "x", "public_key": rsa_keys.private_pem}, "public_key"),
        ({"mode": "es256", "issuer": "x", "public_key": rsa_keys.public_pem}, "public_key"),
        ({"mode": "rs256", "issuer": "x", "jwks": {"keys": [{"kty": "oct", "k": "abc"}]}}, "jwks"),
        # The PEM route's 2048-bit floor holds for a JWKS too, and a kid names one key.
        ({"mode": "rs256", "issuer": "x", "jwks": {"keys": [weak_jwk]}}, "jwks"),
        ({"mode": "rs256", "issuer": "x", "jwks": {"keys": [named, named]}}, "jwks"),
        # A key marked for encryption is not one to check signatures with (RFC 7517 4.2, 4.3).
        ({"mode": "rs256", "issuer": "x", "jwks": {"keys": [{**named, "use": "enc"}]}}, "jwks"),
        (
            {"mode": "rs256", "issuer": "x", "jwks": {"keys": [{**named, "key_ops": ["encrypt"]}]}},
            "jwks",
        ),
        # One PEM block and nothing else: a second key would be ignored, junk stored and echoed.
        (
            {"mode": "rs256", "issuer": "x", "public_key": rsa_keys.public_pem * 2},
            "public_key",
        ),
        (
            {"mode": "rs256", "issuer": "x", "public_key": rsa_keys.public_pem + "junk\x01"},
            "public_key",
        ),
        ({"mode": "hs512", "issuer": "x"}, "mode"),
        ({"mode": "hs256", "issuer": "x", "tenant_id": acme.id}, "tenant_id"),
    ):
        r = await gw.client.put(f"/admin/tenants/{other.id}/jwt", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.text)
    token = sign(claims("acme"), created["secret"], "HS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(token))).status_code == 200
    # Replacing the config rotates the secret: the old one stops at once.
    rotated = await enable_jwt(gw, acme.id, {"mode": "hs256", "issuer": "acme"})
    assert rotated["secret"] != created["secret"]
    assert (await gw.client.get("/v1/agents", headers=bearer(token))).status_code == 401
    fresh = sign(claims("acme"), rotated["secret"], "HS256")
    assert (await gw.client.get("/v1/agents", headers=bearer(fresh))).status_code == 200
    assert (await gw.client.delete(url, headers=ADMIN)).status_code == 204
    assert (await gw.client.get("/v1/agents", headers=bearer(fresh))).status_code == 401
    assert (await gw.client.get(url, headers=ADMIN)).status_code == 404
    assert (await gw.client.delete(url, headers=ADMIN)).status_code == 404


@pytest.fixture
async def gw_both(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    """A gateway on SQLite and on PostgreSQL."""
    async for gateway in gateway_for(database_url, mock_llm_base_url):
        yield gateway


async def test_concurrent_puts_of_one_config_all_succeed(gw_both: Gateway) -> None:
    # A PUT is an upsert: concurrent ones of one tenant all succeed, the last one's config
    # stays. They raced to insert it, and the losers got 409 "Another tenant already uses
    # this issuer" (no other tenant did).
    acme = await gw_both.create_tenant("racer")
    other = await gw_both.create_tenant("rival")

    async def put(tenant_id: str, issuer: str) -> int:
        r = await gw_both.client.put(
            f"/admin/tenants/{tenant_id}/jwt",
            json={"mode": "hs256", "issuer": issuer},
            headers=ADMIN,
        )
        return r.status_code

    statuses = await asyncio.gather(*(put(acme.id, "racer") for _ in range(4)))
    assert statuses == [200] * 4, statuses
    await gw_both.client.delete(f"/admin/tenants/{acme.id}/jwt", headers=ADMIN)
    statuses = await asyncio.gather(*(put(acme.id, f"racer-{i}") for i in range(4)))
    assert statuses == [200] * 4, statuses
    shown = (await gw_both.client.get(f"/admin/tenants/{acme.id}/jwt", headers=ADMIN)).json()
    assert shown["issuer"] in {f"racer-{i}" for i in range(4)}
    # Two tenants racing for one issuer: exactly one gets it.
    contested = await asyncio.gather(put(acme.id, "contested"), put(other.id, "contested"))
    assert sorted(contested) == [200, 409], contested


@pytest.mark.parametrize("issuer", ["", "has space", "a" * 513])
async def test_bad_issuers_are_422(gw: Gateway, issuer: str) -> None:
    acme = await gw.create_tenant("acme")
    r = await gw.client.put(
        f"/admin/tenants/{acme.id}/jwt", json={"mode": "hs256", "issuer": issuer}, headers=ADMIN
    )
    assert r.status_code == 422
