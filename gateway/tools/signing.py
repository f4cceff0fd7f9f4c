"""The `X-Gateway-Signature` header of HTTP tool calls.

`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, with one more `v1=` per
extra secret (the previous secret, during the 24 h after a rotation). A receiver recomputes
the HMAC over the exact bytes it received with its secret, compares it in constant time with
each `v1` value, and rejects a `t` too far from its own clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header value signing `body` at `timestamp` with every secret, current first."""
    signed = str(timestamp).encode() + b"." + body
    parts = [f"t={timestamp}"]
    for secret in secrets:
        parts.append("v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest())
    return ",".join(parts)
