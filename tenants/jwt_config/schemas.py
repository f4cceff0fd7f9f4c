"""Bodies of `PUT/GET/DELETE /admin/tenants/{id}/jwt`.

The generated HS256 `secret` appears only in the answer to the PUT that created it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

from gateway.core.clock import rfc3339
from gateway.core.text import Text, check_json_tree
from tenants.jwt_config.keys import ALGORITHMS
from tenants.models import JwtConfig

JwtMode = Literal["hs256", "rs256", "es256"]
Issuer = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f-\x9f\s]+$")
]


class JwtConfigPut(BaseModel):
    """`PUT /admin/tenants/{id}/jwt`: `hs256` (secret generated) or a public key / JWKS.

    Which key goes with which mode is checked by `service.put_config` (422 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    mode: JwtMode
    issuer: Issuer
    """The `iss` of the tenant's tokens; unique across tenants."""
    public_key: Text | None = None
    """PEM public key (`rs256` / `es256`)."""
    jwks: dict[str, Any] | None = None
    """`{"keys": [JWK, …]}` public keys (`rs256` / `es256`)."""

    @field_validator("jwks")
    @classmethod
    def _storable_jwks(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        check_json_tree(value)
        return value


class JwtConfigPublic(BaseModel):
    """A tenant's JWT config as shown (never the secret, except `secret` on creation)."""

    object: Literal["jwt_config"] = "jwt_config"
    tenant_id: str
    mode: JwtMode
    algorithm: str
    issuer: str
    audience: str
    public_key: str | None
    jwks: dict[str, Any] | None
    created_at: str
    updated_at: str | None
    secret: str | None = None
    """The generated HS256 secret: present in the PUT answer only, never again."""


def config_public(
    config: JwtConfig, *, audience: str, secret: str | None = None
) -> JwtConfigPublic:
    """Render a config row (with the freshly generated secret, once)."""
    return JwtConfigPublic(
        tenant_id=config.tenant_id,
        mode=config.mode,
        algorithm=ALGORITHMS[config.mode],
        issuer=config.issuer,
        audience=audience,
        public_key=config.public_key,
        jwks=config.jwks,
        created_at=rfc3339(config.created_at) or "",
        updated_at=rfc3339(config.updated_at),
        secret=secret,
    )
