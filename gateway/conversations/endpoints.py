"""`/v1/conversations`: create, read, list items, delete (scope `conversations`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal
from gateway.conversations import service
from gateway.conversations.schemas import (
    ConversationCreate,
    ConversationPublic,
    item_position,
    render_conversation,
    render_item,
)
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from gateway.core.openapi import error_responses
from gateway.core.state import app_state
from tenants.pagination import PageDep

router = APIRouter(route_class=JsonBodyRoute, tags=["conversations"])
NOT_FOUND = error_responses(404)

ConversationsPrincipal = Annotated[Principal, Depends(require_scope("conversations"))]
ConversationId = Annotated[str, Path(description="The conversation's id.")]
"""Any id: one no conversation can have is a 404 as an unknown one (the URL's own bound,
`GATEWAY_MAX_HEADER_BYTES`, bounds it)."""


# Where a new conversation's id leads (OpenAPI links).
_CONVERSATION_LINKS = {
    name: {"operationId": operation, "parameters": {"conversation_id": "$response.body#/id"}}
    for name, operation in {
        "GetConversation": "get_conversation_v1_conversations__conversation_id__get",
        "ListItems": "list_conversation_items_v1_conversations__conversation_id__items_get",
        "DeleteConversation": "delete_conversation_v1_conversations__conversation_id__delete",
    }.items()
}


@router.post(
    "/conversations",
    status_code=201,
    response_model=ConversationPublic,
    responses={201: {"links": _CONVERSATION_LINKS}},
)
async def create_conversation(
    principal: ConversationsPrincipal,
    session: SessionDep,
    body: ConversationCreate | None = None,
) -> dict[str, Any]:
    """A new, empty conversation; runs continue it with `conversation_id`."""
    row = await service.create_conversation(
        session, principal, body.metadata if body is not None else None
    )
    return render_conversation(row)


@router.get(
    "/conversations/{conversation_id}", response_model=ConversationPublic, responses=NOT_FOUND
)
async def get_conversation(
    conversation_id: ConversationId, principal: ConversationsPrincipal, session: SessionDep
) -> dict[str, Any]:
    row = await service.require_conversation(session, principal, conversation_id)
    return render_conversation(row)


@router.get("/conversations/{conversation_id}/items", responses=NOT_FOUND)
async def list_conversation_items(
    conversation_id: ConversationId,
    principal: ConversationsPrincipal,
    session: SessionDep,
    page: PageDep,
    order: Annotated[
        Literal["asc", "desc"],
        Query(description="`asc` (default): oldest first; `desc`: newest first."),
    ] = "asc",
) -> dict[str, Any]:
    """The conversation's items (messages, tool calls, tool outputs), oldest first, or newest
    first with `order=desc` (`after` then pages back in time)."""
    after = None if page.after is None else item_position(page.after)
    if page.after is not None and after is None:
        await service.require_conversation(session, principal, conversation_id)
        return {"data": [], "has_more": False}
    result = await service.list_items(
        session,
        principal,
        conversation_id,
        limit=page.limit,
        after=after,
        newest_first=order == "desc",
    )
    return result.render(render_item)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    responses={**NOT_FOUND, **error_responses(409)},
)
async def delete_conversation(
    conversation_id: ConversationId, principal: ConversationsPrincipal, request: Request
) -> Response:
    """Delete the conversation and its items (409 while a turn runs on it or one of its runs
    waits for approval)."""
    await app_state(request).conversations.delete(principal, conversation_id)
    return Response(status_code=204)
