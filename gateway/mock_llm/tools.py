"""A demo HTTP tool endpoint in the mock LLM: `POST /_mock/tools/{name}`.

`gateway demo` points the demo agent's `lookup_order` tool here, and hands this process the
tenant's tool-signing secret, so a newcomer sees a signed call verified end to end. It checks
the `X-Gateway-Signature` header exactly as a tenant's receiver would (HMAC-SHA256 over
`"<t>.<raw body>"`, any `v1`, constant-time) and answers what it received.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson


def signature_ok(header: str, body: bytes, secret: str) -> bool:
    """True when one `v1` of the header is the HMAC of `"<t>.<body>"` under `secret`."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamp = next((value for key, value in pairs if key == "t"), None)
    if timestamp is None:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in pairs if key == "v1")


def tool_answer(
    name: str, signature: str | None, body: bytes, secret: str | None
) -> dict[str, Any]:
    """The demo tool's answer: an invented order and whether the call was signed right."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = {}
    arguments = payload.get("arguments") if isinstance(payload, dict) else None
    order_id = arguments.get("order_id") if isinstance(arguments, dict) else None
    verified = None if secret is None else signature_ok(signature or "", body, secret)
    return {
        "tool": name,
        "order_id": order_id,
        "status": "shipped",
        "signature_verified": verified,
    }
