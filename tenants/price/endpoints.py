"""`/admin/models/...` price routes: thin wrappers over `tenants.price.service`."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Request, Response, status

from gateway.core.clock import rfc3339, utcnow
from gateway.core.db import SessionDep, after_commit
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from tenants.admin.context import AdminContext, AdminContextDep
from tenants.pagination import ListBody, PageParams, cursor_params, page_of
from tenants.price import service
from tenants.price.repository import PriceRepository
from tenants.price.schemas import (
    MODEL_NAME_PATTERN,
    ModelName,
    PricePublic,
    PricePut,
    price_public,
)

router = APIRouter(route_class=JsonBodyRoute, prefix="/models", tags=["admin"])
ModelPath = Annotated[ModelName, Path(description="The model name agents use.")]


ModelPageDep = Annotated[
    PageParams,
    Depends(cursor_params(MODEL_NAME_PATTERN, "Model name of the last price already seen.")),
]
ChangePageDep = Annotated[
    PageParams,
    Depends(
        cursor_params(
            r"^[0-9T:.+Z-]{10,40}$", "`effective_at` of the last change already seen (RFC 3339)."
        )
    ),
]


@router.get("/prices", response_model=ListBody[PricePublic])
async def list_prices(session: SessionDep, page: ModelPageDep) -> dict[str, Any]:
    """Every model's price in force now, by model name (models whose price was removed are
    left out): `{"data": [...], "has_more": bool}`, `after` = the last model name."""
    rows = [row for row in await PriceRepository(session).in_force(utcnow()) if row.priced]
    return page_of(rows, lambda row: row.model, page).render(price_public)


class PriceTable(Protocol):
    """The data plane's price table (reloaded every `GATEWAY_PRICES_REFRESH_S`)."""

    async def load(self) -> None: ...


def reload_after_commit(ctx: AdminContext, request: Request) -> None:
    """This replica's price table reloads as soon as the change commits, so its spend limits
    and metrics use the new price at once (other replicas within `GATEWAY_PRICES_REFRESH_S`)."""
    table: PriceTable = app_state(request).prices
    after_commit(ctx.session, table.load)


@router.put("/{model:path}/price", response_model=PricePublic)
async def put_price(
    model: ModelPath, body: PricePut, ctx: AdminContextDep, request: Request
) -> PricePublic:
    """Set the model's price from `effective_at` (default now) on; earlier runs keep theirs."""
    row = await service.put_price(ctx.session, model, body)
    reload_after_commit(ctx, request)
    public = price_public(row)
    await ctx.done(
        "price.put",
        "model_price",
        model,
        details=public.model_dump(include=_PRICE_FIELDS),
    )
    return public


@router.get("/{model:path}/price", response_model=PricePublic)
async def get_price(model: ModelPath, session: SessionDep) -> PricePublic:
    """The model's price in force now (404: unpriced)."""
    return price_public(await service.current_price(session, model))


@router.get("/{model:path}/price/history", response_model=ListBody[PricePublic])
async def price_history(
    model: ModelPath, session: SessionDep, page: ChangePageDep
) -> dict[str, Any]:
    """Every price change of the model, oldest first, including scheduled and removed ones:
    `{"data": [...], "has_more": bool}`, `after` = the last change's `effective_at`."""
    rows = await PriceRepository(session).history(model)
    return page_of(rows, lambda row: rfc3339(row.effective_at) or "", page).render(price_public)


@router.delete("/{model:path}/price", status_code=status.HTTP_204_NO_CONTENT)
async def delete_price(model: ModelPath, ctx: AdminContextDep, request: Request) -> Response:
    """Remove the model's price from now on (its later runs are unpriced; earlier ones keep
    their cost)."""
    await service.remove_price(ctx.session, model)
    reload_after_commit(ctx, request)
    await ctx.done("price.delete", "model_price", model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_PRICE_FIELDS = {
    "input_per_mtok",
    "cached_input_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
    "effective_at",
}
