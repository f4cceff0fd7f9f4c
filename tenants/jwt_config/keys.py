"""Verification keys of a tenant's JWT config, built once and cached by the data plane.

One algorithm per tenant (`hs256` -> HS256, `rs256` -> RS256, `es256` -> ES256): a token whose
header names any other algorithm (`none`, HS256 against an RSA key, …) is refused before any
signature check, and python-jose is always given that explicit one-item list.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

ALGORITHMS: dict[str, str] = {"hs256": "HS256", "rs256": "RS256", "es256": "ES256"}
KEY_TYPES: dict[str, str] = {"rs256": "RSA", "es256": "EC"}
MAX_PEM_CHARS = 16_384
MAX_JWKS_KEYS = 20
_PRIVATE_JWK_FIELDS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


class KeyMaterialError(ValueError):
    """The PEM or JWKS is not a usable public key of the tenant's algorithm."""


def public_pem_key(mode: str, pem: str, *, sent: bool = False) -> Key:
    """The verification key of a PEM public key, checked against the mode's algorithm.

    `sent`: a PEM being stored (the admin PUT) must be one PEM block and nothing else: a
    second key (meant for a rotation: use a JWKS) would be ignored, and text around the
    block stored and echoed. A stored one still loads as before."""
    if len(pem) > MAX_PEM_CHARS or "PRIVATE" in pem or "-----BEGIN" not in pem:
        raise KeyMaterialError("public_key must be a PEM public key")
    if sent and not _one_pem_block(pem):
        raise KeyMaterialError(
            "public_key must be exactly one PEM public key block and nothing else (for "
            "several keys, send a jwks)"
        )
    try:
        loaded = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError("public_key is not a PEM public key") from exc
    # python-jose's backend loads any PEM for any algorithm: check the key type ourselves.
    if mode == "rs256" and not (isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size >= 2048):
        raise KeyMaterialError("rs256 needs an RSA public key of at least 2048 bits")
    if mode == "es256" and not (
        isinstance(loaded, ec.EllipticCurvePublicKey) and loaded.curve.name == "secp256r1"
    ):
        raise KeyMaterialError("es256 needs a P-256 EC public key")
    try:
        key: Key = jwk.construct(pem, ALGORITHMS[mode])
    except (JOSEError, ValueError, TypeError) as exc:
        raise KeyMaterialError(f"public_key is not a {ALGORITHMS[mode]} public key") from exc
    if not key.is_public():
        raise KeyMaterialError("public_key must be a public key")
    return key


def jwks_keys(mode: str, jwks: dict[str, Any], *, sent: bool = False) -> list[Key]:
    """The verification keys of a JWKS (`{"keys": [...]}`), all of the mode's key type.

    `sent`: a JWKS being stored (the admin PUT), also held to the rules added since JWKS
    were first taken (RSA keys of 2048 bits or more, no `kid` twice); a stored one still
    loads without them, so an upgrade never turns a tenant's working login into 401s."""
    entries = jwks.get("keys")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_JWKS_KEYS:
        raise KeyMaterialError(f'jwks must be {{"keys": [1..{MAX_JWKS_KEYS} public keys]}}')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != KEY_TYPES[mode]:
            raise KeyMaterialError(f"every jwks key must have kty {KEY_TYPES[mode]}")
        if _PRIVATE_JWK_FIELDS & entry.keys():
            raise KeyMaterialError("jwks must hold public keys only")
        if mode == "es256" and entry.get("crv") != "P-256":
            raise KeyMaterialError("es256 jwks keys must be on curve P-256")
        if entry.get("alg", ALGORITHMS[mode]) != ALGORITHMS[mode]:
            raise KeyMaterialError(f"every jwks key must be for {ALGORITHMS[mode]}")
        if sent and not _verifies(entry):
            # RFC 7517 4.2, 4.3: a key marked for encryption is not one to check signatures.
            raise KeyMaterialError('every jwks key must be for signatures ("use": "sig")')
        try:
            key = jwk.construct(entry, ALGORITHMS[mode])
        except (JOSEError, ValueError, TypeError, KeyError) as exc:
            raise KeyMaterialError("a jwks key is not a usable public key") from exc
        # The PEM route's rule: an RSA key of at least 2048 bits (python-jose takes any).
        if sent and mode == "rs256" and _rsa_bits(key) < 2048:
            raise KeyMaterialError("rs256 needs RSA public keys of at least 2048 bits")
        keys.append(key)
    named = [kid for kid in jwks_kids(jwks) if kid is not None]
    if sent and len(named) != len(set(named)):
        # A token naming that kid would be checked against either key: which one is meant?
        raise KeyMaterialError("two jwks keys share a kid")
    return keys


def _one_pem_block(pem: str) -> bool:
    text = pem.strip()
    return (
        text.count("-----BEGIN") == 1
        and text.startswith("-----BEGIN")
        and text.count("-----END") == 1
        and text.endswith("-----")
    )


def _rsa_bits(key: Key) -> int:
    prepared = getattr(key, "prepared_key", None)
    size = getattr(prepared, "key_size", None)
    return size if isinstance(size, int) else 0


def _verifies(entry: dict[str, Any]) -> bool:
    """A JWK that may check signatures: `use` absent or `sig`, `key_ops` absent or naming
    `verify`."""
    ops = entry.get("key_ops")
    return entry.get("use", "sig") == "sig" and (
        ops is None or (isinstance(ops, list) and "verify" in ops)
    )


def jwks_kids(jwks: dict[str, Any]) -> tuple[str | None, ...]:
    """Each JWKS key's `kid` (None when it has none), in the order `jwks_keys` builds them."""
    kids = []
    for entry in jwks.get("keys") or ():
        kid = entry.get("kid") if isinstance(entry, dict) else None
        kids.append(kid if isinstance(kid, str) else None)
    return tuple(kids)


def hmac_key(secret: str) -> Key:
    """The verification key of an HS256 secret."""
    key: Key = jwk.construct(secret, "HS256")
    return key
