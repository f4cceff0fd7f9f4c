"""The API key format: prefix, body, CRC32 base62 checksum; HMAC at rest."""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib

from gateway.core.ids import BASE62
from tenants.api_key.keys import checksum, display_parts, generate_key, hash_key, is_well_formed


def _spec_checksum(body: str) -> str:
    # Written independently of the implementation, from the documented format.
    n = zlib.crc32(body.encode()) & 0xFFFFFFFF
    digits = ""
    while n:
        n, r = divmod(n, 62)
        digits = BASE62[r] + digits
    return digits.rjust(6, "0")


def test_generated_keys_follow_the_format() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"gw_[0-9A-Za-z]{32}[0-9A-Za-z]{6}", key)
        assert key[-6:] == _spec_checksum(key[3:35])
        assert is_well_formed(key)


def test_known_checksum_value() -> None:
    body = "0" * 32
    assert checksum(body) == _spec_checksum(body)
    assert len(checksum(body)) == 6


def test_malformed_keys_are_rejected_without_io() -> None:
    key = generate_key()
    flipped = key[:10] + ("a" if key[10] != "a" else "b") + key[11:]
    assert not is_well_formed(flipped)
    assert not is_well_formed(key[:-1])
    assert not is_well_formed("sk_" + key[3:])
    assert not is_well_formed(key[:20] + "-" + key[21:])
    assert not is_well_formed("")


def test_hash_is_hmac_sha256_keyed_by_the_secret() -> None:
    key = generate_key()
    expected = hmac.new(b"s3cret", key.encode(), hashlib.sha256).hexdigest()
    assert hash_key(key, "s3cret") == expected
    assert hash_key(key, "other") != expected
    assert key not in expected


def test_display_parts() -> None:
    key = generate_key()
    prefix, last4 = display_parts(key)
    assert key.startswith(prefix) and key.endswith(last4) and len(last4) == 4
