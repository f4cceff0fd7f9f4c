"""The HS256 secrets of tenants: generated here, shown once, stored Fernet-encrypted.

The gateway must keep the secret usable to verify tokens, so it cannot store a hash; it stores
the secret encrypted under a Fernet key derived (HMAC-SHA256) from GATEWAY_SECRET_KEY.
Rotating GATEWAY_SECRET_KEY therefore requires re-issuing HS256 configs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken

SECRET_BYTES = 48


class SecretUnreadableError(Exception):
    """The stored secret was encrypted under another GATEWAY_SECRET_KEY."""


def _fernet(secret_key: str) -> Fernet:
    derived = hmac.new(secret_key.encode(), b"jwt-secret-encryption-v1", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def generate_secret() -> str:
    """A new HS256 secret: 48 random bytes, URL-safe base64 (64 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def encrypt_secret(secret: str, secret_key: str) -> str:
    """The at-rest form of `secret`."""
    return _fernet(secret_key).encrypt(secret.encode()).decode()


def decrypt_secret(stored: str, secret_key: str) -> str:
    """The secret back from its at-rest form."""
    try:
        return _fernet(secret_key).decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadableError("cannot decrypt the stored HS256 secret") from exc
