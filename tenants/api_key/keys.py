"""The API key format and its at-rest hash.

A key is `gw_` + 32 random base62 characters + a 6-character checksum: the CRC32 of those 32
characters, as an unsigned integer written in base62 and left-padded with `0`. The checksum lets
the gateway reject a mistyped or made-up key without touching the database. Keys are stored
only as HMAC-SHA256(secret_key, plaintext) and listed as `prefix…last4`.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib

from gateway.core.ids import BASE62, random_base62, to_base62
from tenants.models.api_key import KEY_PREFIX

__all__ = ["KEY_PREFIX", "checksum", "generate_key", "hash_key", "is_well_formed"]
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = 7
_ALPHABET = frozenset(BASE62)


def checksum(body: str) -> str:
    """The 6-character base62 CRC32 checksum of a key body."""
    return to_base62(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, CHECKSUM_LENGTH)


def generate_key() -> str:
    """A new random API key with a valid checksum."""
    body = random_base62(BODY_LENGTH)
    return f"{KEY_PREFIX}{body}{checksum(body)}"


def is_well_formed(key: str) -> bool:
    """Prefix, length, alphabet and checksum are right (no I/O)."""
    if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
        return False
    rest = key[len(KEY_PREFIX) :]
    if not _ALPHABET.issuperset(rest):
        return False
    body, check = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return hmac.compare_digest(checksum(body), check)


def hash_key(key: str, secret_key: str) -> str:
    """HMAC-SHA256 of the key, hex: the only form in which a key is stored."""
    return hmac.new(secret_key.encode(), key.encode(), hashlib.sha256).hexdigest()


def display_parts(key: str) -> tuple[str, str]:
    """(prefix, last4) for listing a key as `prefix…last4`."""
    return key[:DISPLAY_PREFIX_LENGTH], key[-4:]
