"""Request and response bodies of the tenant routes, and the `TenantLimits` document.

A tenant's `limits` are stored as the full `TenantLimits` object (every key present, `null` =
unlimited), so the data plane reads them with `tenant_limits(tenant)`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from gateway.core.clock import rfc3339
from gateway.core.json_types import UniqueItems
from gateway.core.text import DisplayName
from tenants.models import Tenant
from tenants.price.amounts import UsdAmount

SLUG_PATTERN = r"^[a-z0-9-]{2,40}$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
TenantName = DisplayName
TenantStatus = Literal["active", "suspended"]


# StrictInt: "5", 5.5 and true are refused rather than coerced; the bound fits a BIGINT.
def _integral(value: Any) -> Any:
    """JSON has one number type: `5.0` is the integer 5 (as JSON Schema's `integer` says), but
    `5.5`, `"5"` and `true` stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


LimitValue = Annotated[StrictInt, Field(ge=1, le=10**12), BeforeValidator(_integral)] | None
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
]
AllowedModels = Annotated[list[ModelName], Field(max_length=256), UniqueItems] | None
"""Models the tenant's agents may name (`null`: any)."""
SpendValue = (
    Annotated[
        Decimal,
        UsdAmount(
            maximum=10**9,
            positive=True,
            description=(
                "USD: a decimal string (exact, at most 6 decimal places) or a number (rounded"
                " half-even to 6 places); null: unlimited."
            ),
            example="25.00",
        ),
    ]
    | None
)


class TenantLimits(BaseModel):
    """Per-tenant limits and quotas; `null` means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: LimitValue = None
    requests_per_minute_per_user: LimitValue = None
    tokens_per_minute: LimitValue = None
    tokens_per_day: LimitValue = None
    max_concurrent_runs: LimitValue = None
    spend_per_day_usd: SpendValue = None
    """Model spend per UTC day, priced by the model price table."""
    spend_per_month_usd: SpendValue = None
    """Model spend per calendar month (UTC)."""


class TenantCreate(BaseModel):
    """`POST /admin/tenants`."""

    model_config = ConfigDict(extra="forbid")

    slug: Slug
    name: TenantName
    limits: TenantLimits | None = Field(default_factory=TenantLimits)
    """Omitted: the deployment's default limits; `null`: every limit unlimited."""
    allowed_models: AllowedModels = None


def _not_nullable(schema: dict[str, Any]) -> None:
    """Drop the `null` choice from a field's schema: the field may be omitted, not null."""
    choices = [c for c in schema.pop("anyOf", []) if c != {"type": "null"}]
    if len(choices) == 1:
        schema.update(choices[0])
    elif choices:
        schema["anyOf"] = choices


class TenantUpdate(BaseModel):
    """`PATCH /admin/tenants/{id}`: only the fields sent change; `limits` keys merge."""

    model_config = ConfigDict(extra="forbid")

    # Omitted means unchanged; null is refused (the schema does not offer it either).
    name: TenantName | None = Field(default=None, json_schema_extra=_not_nullable)
    status: TenantStatus | None = Field(default=None, json_schema_extra=_not_nullable)
    limits: TenantLimits | None = None
    """The keys sent replace the tenant's; `null` makes every limit unlimited."""
    allowed_models: AllowedModels = None
    """Replaces the list when sent; `null` allows any model again."""
    # Present only to answer "slug is immutable" rather than a generic unknown-field error
    # (the service refuses any other slug than the tenant's own; its own changes nothing).
    slug: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("name", "status", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class TenantPublic(BaseModel):
    """A tenant as the admin API shows it."""

    id: str
    object: Literal["tenant"] = "tenant"
    slug: str
    name: str
    status: TenantStatus
    limits: TenantLimits
    allowed_models: list[str] | None
    created_at: str
    updated_at: str | None


def tenant_limits(tenant: Tenant) -> TenantLimits:
    """The tenant's limits as a typed object (missing keys are unlimited)."""
    stored = tenant.limits or {}
    known = {name: stored[name] for name in TenantLimits.model_fields if name in stored}
    return TenantLimits.model_validate(known)


def tenant_public(tenant: Tenant) -> TenantPublic:
    """Render a tenant row."""
    return TenantPublic(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        status=tenant.status,
        limits=tenant_limits(tenant),
        allowed_models=tenant.allowed_models,
        created_at=rfc3339(tenant.created_at) or "",
        updated_at=rfc3339(tenant.updated_at),
    )
