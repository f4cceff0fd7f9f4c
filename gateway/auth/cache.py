"""The per-process principal cache, keyed by the credential's hash."""

from __future__ import annotations

from gateway.auth.principal import Principal
from gateway.core.cache import TTLCache


class PrincipalCache(TTLCache[str, Principal]):
    """Resolved credentials, trusted for at most `ttl_s` (≤ 5 s) without a DB look-up."""
