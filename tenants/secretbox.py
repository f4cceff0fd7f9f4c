"""Secrets the gateway must read back (HS256 JWT secrets, tool-signing secrets, tenant
upstream keys), stored Fernet-encrypted.

A hash would not do: the gateway signs or authenticates with them. Each kind of secret is
encrypted under its own Fernet key, derived (HMAC-SHA256) from GATEWAY_SECRET_KEY and a purpose
label, so one kind's ciphertext never decrypts as another's. Rotating GATEWAY_SECRET_KEY
therefore means re-issuing these secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken


class SecretUnreadableError(Exception):
    """The stored secret was encrypted under another GATEWAY_SECRET_KEY."""


def _fernet(secret_key: str, purpose: str) -> Fernet:
    derived = hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret: str, secret_key: str, purpose: str) -> str:
    """The at-rest form of `secret`."""
    return _fernet(secret_key, purpose).encrypt(secret.encode()).decode()


def unseal(stored: str, secret_key: str, purpose: str) -> str:
    """The secret back from its at-rest form."""
    try:
        return _fernet(secret_key, purpose).decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadableError(f"cannot decrypt a stored secret ({purpose})") from exc
