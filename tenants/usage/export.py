"""Billing export: every raw usage record of a range, streamed as NDJSON or CSV.

Records come in `run_id` order, read in pages of `PAGE_SIZE` with a keyset cursor
(`run_id > last`), each page in its own short session, so memory stays bounded however large
the range is. `after=<run_id>:<segment>` (of the last line received) resumes an interrupted
export right after it; `after=<run_id>` alone skips every segment of that run.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlmodel import and_, col, or_, select

from gateway.core.clock import rfc3339
from gateway.core.db import Database
from tenants.models import UsageRecord
from tenants.price.money import usd

PAGE_SIZE = 1000
NDJSON = "application/x-ndjson"
CSV = "text/csv"

FIELDS = (
    "run_id",
    "segment",
    "tenant_id",
    "key_id",
    "user",
    "agent",
    "agent_version",
    "model",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "status",
    "latency_ms",
    "cost_usd",
    "unpriced",
    "day",
    "created_at",
    "model_usage",
)
"""`model_usage` is null, or for a run that called several models each model's share with its
`cost_usd` (a JSON object; in CSV its JSON text), last so CSV readers by position keep working."""


def _row(record: UsageRecord) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in FIELDS:
        if name == "cost_usd":
            row[name] = usd(record.cost_pico)
            continue
        if name == "model_usage":
            row[name] = _model_usage(record.model_usage)
            continue
        value = getattr(record, name)
        if isinstance(value, datetime):  # RFC 3339 UTC, as everywhere in the API
            row[name] = rfc3339(value)
        else:
            row[name] = value.isoformat() if isinstance(value, date) else value
    return row


def _model_usage(breakdown: dict[str, dict[str, Any]] | None) -> dict[str, Any] | None:
    if not breakdown:
        return None
    shares: dict[str, Any] = {}
    for model, share in breakdown.items():
        rendered = {k: v for k, v in share.items() if k != "cost_pico"}
        rendered["cost_usd"] = usd(share.get("cost_pico") or 0)
        shares[model] = rendered
    return shares


async def iter_records(
    db: Database,
    *,
    tenant_id: str | None,
    start: date,
    end: date,
    after: str | None,
    after_segment: int | None = None,
    page_size: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The records of `start..end` (inclusive UTC days), by run id then segment, after the
    cursor (`after`, and with `after_segment` that run's later segments first)."""
    size = page_size or PAGE_SIZE
    postgres = db.engine.dialect.name == "postgresql"
    cursor = after
    position: tuple[str, int] | None = None
    if after is not None and after_segment is not None:
        position = (after, after_segment)
    while True:
        statement = select(UsageRecord).where(
            col(UsageRecord.day) >= start, col(UsageRecord.day) <= end
        )
        if tenant_id is not None:
            statement = statement.where(col(UsageRecord.tenant_id) == tenant_id)
        if position is not None:
            run_id, segment = position
            statement = statement.where(
                # The first bound is implied by the second; stated alone it is an index range
                # (the OR is not), so a page costs its rows, not a scan of the tenant's range.
                col(UsageRecord.run_id) >= run_id,
                or_(
                    col(UsageRecord.run_id) > run_id,
                    and_(col(UsageRecord.run_id) == run_id, col(UsageRecord.segment) > segment),
                ),
            )
        elif cursor is not None:
            statement = statement.where(col(UsageRecord.run_id) > cursor)
        statement = statement.order_by(col(UsageRecord.run_id), col(UsageRecord.segment)).limit(
            size
        )
        async with db.session() as session:
            if postgres:
                # Each page is the same prepared statement (asyncpg caches it per connection);
                # after five runs PostgreSQL may switch to a generic plan, which cannot see
                # that a big tenant's range is most of the table and sorts all of it (past
                # the statement timeout). A custom plan per page keeps the index range scan.
                connection = await session.connection()
                await connection.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            records = list((await session.exec(statement)).all())
        for record in records:
            yield _row(record)
        if len(records) < size:
            return
        # The cursor is (run_id, segment): a resumed run's segments can straddle a page.
        position = (records[-1].run_id, records[-1].segment)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP's CSV injection list)."""


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        # An end user's JWT `sub` (or a model name) such as `=HYPERLINK(…)` would be a live
        # formula when the file is opened in a spreadsheet: a leading `'` makes it text.
        return "'" + value
    return value


def wants_csv(accept: str | None) -> bool:
    """CSV when the client prefers `text/csv` (q > 0) to NDJSON; NDJSON otherwise (the
    default: also for a tie, `*/*` or any other type)."""
    if not accept:
        return False
    weights: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *params = (item.strip() for item in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[media] = max(weights.get(media, 0.0), q)
    csv_q = weights.get(CSV, 0.0)
    return csv_q > weights.get(NDJSON, 0.0)


async def _ndjson(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for row in rows:
        yield (json.dumps(row, separators=(",", ":")) + "\n").encode()


async def _csv(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    count = 0
    async for row in rows:
        writer.writerow([_cell(row[name]) for name in FIELDS])
        count += 1
        if count % 200 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def _from(
    first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    """`first`, then the rest of the records (none when `first` is None)."""
    if first is None:
        return
    yield first
    async for row in rest:
        yield row


async def export_response(
    db: Database,
    *,
    accept: str | None,
    tenant_id: str | None,
    start: date,
    end: date,
    after: str | None,
    after_segment: int | None = None,
) -> StreamingResponse:
    """The streamed export, in the format the `Accept` header asks for. The first page is
    read before the response starts: a database that cannot answer is then an error
    response (503), not a 200 whose body breaks off."""
    records = iter_records(
        db, tenant_id=tenant_id, start=start, end=end, after=after, after_segment=after_segment
    )
    first = await anext(records, None)
    rows = _from(first, records)
    if wants_csv(accept):
        return StreamingResponse(_csv(rows), media_type="text/csv; charset=utf-8")
    return StreamingResponse(_ndjson(rows), media_type=NDJSON)
