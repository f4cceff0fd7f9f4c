"""Fixtures for identity tests: a seeded gateway, signing keys and token helpers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from tests.conftest import ADMIN_TOKEN
from tests.gateway.conftest import ADMIN, Gateway, gateway_for, mock_llm_base_url

AUDIENCE = "agent-gateway"
__all__ = ["ADMIN", "ADMIN_TOKEN", "AUDIENCE", "Gateway", "mock_llm_base_url"]


@pytest.fixture
async def gw(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    """A gateway on SQLite with the mock LLM upstream (failure limit out of the way)."""
    async for gateway in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        upstream_api="chat_completions",
        auth_failure_limit=10_000,
        admin_auth_failure_limit=10_000,
    ):
        yield gateway


class KeyPair:
    """A private key (PEM, for signing) and its public PEM."""

    def __init__(self, private: Any) -> None:
        self.private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="session")
def rsa_keys() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ec_keys() -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()))


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """Valid end-user claims for `issuer`; override or drop (value None) any of them."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-42",
        "exp": now + 300,
        "iat": now,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(payload: dict[str, Any], key: str, algorithm: str) -> str:
    return str(jwt.encode(payload, key, algorithm=algorithm))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def enable_jwt(gateway: Gateway, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await gateway.client.put(f"/admin/tenants/{tenant_id}/jwt", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result
