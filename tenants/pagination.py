"""Cursor pagination of admin lists.

Lists answer `{"data": [...], "has_more": bool}` and take `limit` (default 20, 1..100) and
`after` (the id of the last item of the previous page). Ids are time-ordered strings, so a page
is `WHERE id > after ORDER BY id LIMIT limit + 1`: the extra row only tells whether more follow.
A newest-first list (the audit log) walks the same ids backwards: `WHERE id < after ORDER BY id
DESC`. Either way a page never repeats or skips an item, however many are added meanwhile.
Repositories build the tenant-scoped statement; `fetch_page` adds the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)


def is_id(value: str) -> bool:
    """Whether `value` can be one of our ids (or a version number used as a cursor).

    Repositories answer "not found" for anything else without a query: a NUL byte, say, is an
    error in PostgreSQL rather than a miss.
    """
    return _ID_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class PageParams:
    """The `limit` and `after` query parameters of a list request."""

    limit: int = DEFAULT_LIMIT
    """How many items to return (1..100)."""

    after: str | None = None
    """The id of the last item already seen; the page starts after it."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows and whether more follow it."""

    items: list[T]
    has_more: bool

    def render(self, item: Callable[[T], Any]) -> dict[str, Any]:
        """The list body: `{"data": [item(row) ...], "has_more": ...}`."""
        return {"data": [item(row) for row in self.items], "has_more": self.has_more}


class ListBody(BaseModel, Generic[M]):
    """The shape of every list response (used as `response_model` for the OpenAPI schema)."""

    data: list[M]
    has_more: bool


def cursor_params(pattern: str, cursor: str) -> Callable[..., Coroutine[Any, Any, PageParams]]:
    """The dependency reading `limit` and `after` of a list whose cursor matches `pattern`
    (`cursor` says what it names, for the OpenAPI description)."""

    async def params(
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1..100).")
        ] = DEFAULT_LIMIT,
        after: Annotated[str | None, Query(pattern=pattern, description=cursor)] = None,
    ) -> PageParams:
        return PageParams(limit=limit, after=after)

    # Evaluated here: FastAPI cannot resolve this module's string annotations that name the
    # factory's arguments.
    params.__annotations__ = {
        "limit": Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1..100).")],
        "after": Annotated[str | None, Query(pattern=pattern, description=cursor)],
        "return": PageParams,
    }
    return params


PageDep = Annotated[
    PageParams, Depends(cursor_params(ID_PATTERN, "Id of the last item already seen."))
]
NumberedPageDep = Annotated[
    PageParams,
    Depends(cursor_params(r"^[0-9]{1,9}$", "Number of the last item already seen.")),
]
"""The pagination of a list keyed by number (agent versions)."""


def page_of(items: Sequence[T], key: Callable[[T], str], page: PageParams) -> Page[T]:
    """One page of a small list held in memory, ordered by `key` (the cursor). Items that share
    a key (two price changes of one instant) are never split across pages: the cursor names
    the key, so a page ending inside such a group would lose the rest of it. Such a page holds
    more than `limit` items."""
    after = page.after
    rest = [item for item in items if after is None or key(item) > after]
    end = min(page.limit, len(rest))
    while 0 < end < len(rest) and key(rest[end]) == key(rest[end - 1]):
        end += 1
    return Page(items=rest[:end], has_more=len(rest) > end)


async def fetch_page(
    session: AsyncSession,
    statement: SelectOfScalar[T],
    id_column: Any,
    page: PageParams,
    *,
    newest_first: bool = False,
) -> Page[T]:
    """Run `statement` ordered by `id_column` (descending when `newest_first`), starting after
    the cursor, one page long."""
    column = col(id_column)
    if page.after is not None:
        statement = statement.where(column < page.after if newest_first else column > page.after)
    order = column.desc() if newest_first else column
    statement = statement.order_by(order).limit(page.limit + 1)
    rows: Sequence[T] = (await session.exec(statement)).all()
    return Page(items=list(rows[: page.limit]), has_more=len(rows) > page.limit)
