"""Secrets the gateway must read back (HS256 JWT secrets, tool-signing secrets, tenant
upstream keys), stored Fernet-encrypted.

A hash would not do: the gateway signs or authenticates with them. Each kind of secret is
encrypted under its own Fernet key, derived (HMAC-SHA256) from GATEWAY_SECRET_KEY and a purpose
label, so one kind's ciphertext never decrypts as another's. During a GATEWAY_SECRET_KEY
rotation, reading accepts the current key and the old ones (GATEWAY_SECRET_KEY_OLD), and
`reseal` (run by `gateway secrets re-encrypt`) moves a stored secret under the current key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.core.errors import ServiceUnavailableError


class SecretUnreadableError(ServiceUnavailableError):
    """The stored secret was encrypted under a GATEWAY_SECRET_KEY no longer configured (lost, or
    removed before `gateway secrets re-encrypt` moved it): a request that needs it is a 503
    `secret_unreadable` until an operator restores the key (docs/operations.md)."""

    default_code = "secret_unreadable"

    def __init__(self, purpose: str) -> None:
        super().__init__(
            f"A secret this request needs ({purpose}) cannot be decrypted with the gateway's"
            " configured keys; an operator must restore the key it was stored under."
        )


def _fernet(secret_key: str, purpose: str) -> Fernet:
    derived = hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(secret: str, secret_key: str, purpose: str) -> str:
    """The at-rest form of `secret`."""
    return _fernet(secret_key, purpose).encrypt(secret.encode()).decode()


def _any_of(secret_key: str | Sequence[str], purpose: str) -> MultiFernet:
    keys = (secret_key,) if isinstance(secret_key, str) else tuple(secret_key)
    return MultiFernet([_fernet(key, purpose) for key in keys])


def unseal(stored: str, secret_key: str | Sequence[str], purpose: str) -> str:
    """The secret back from its at-rest form (`secret_key`: one key, or the current key then
    the old ones of a rotation)."""
    try:
        return _any_of(secret_key, purpose).decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadableError(purpose) from exc


def reseal(stored: str, secret_keys: Sequence[str], purpose: str) -> str:
    """`stored` encrypted anew under the first of `secret_keys` (read with any of them)."""
    try:
        return _any_of(secret_keys, purpose).rotate(stored.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadableError(purpose) from exc
