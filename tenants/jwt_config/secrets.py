"""The HS256 secrets of tenants: generated here, shown once, stored Fernet-encrypted
(`tenants.secretbox`)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from tenants.secretbox import SecretUnreadableError, seal, unseal

SECRET_BYTES = 48
_PURPOSE = "jwt-secret-encryption-v1"
PURPOSE = _PURPOSE

__all__ = ["SecretUnreadableError", "decrypt_secret", "encrypt_secret", "generate_secret"]


def generate_secret() -> str:
    """A new HS256 secret: 48 random bytes, URL-safe base64 (64 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def encrypt_secret(secret: str, secret_key: str) -> str:
    """The at-rest form of `secret`."""
    return seal(secret, secret_key, _PURPOSE)


def decrypt_secret(stored: str, secret_key: str | Sequence[str]) -> str:
    """The secret back from its at-rest form."""
    return unseal(stored, secret_key, _PURPOSE)
