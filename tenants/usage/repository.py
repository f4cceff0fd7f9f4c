"""Every query on the usage tables: batched inserts (raw records and their rollups in the
caller's unit of work) and the grouped reports.

Reports read `usage_rollups` only (a few rows per tenant, day and group value), so a 30-day
report costs the same for a tenant with 10 runs or 10 million. `raw_report` computes the same
report from the raw records: the reconciliation check (`gateway usage check`, the tests).
Both filter and group on the `day` column (a DATE), so they behave the same on SQLite and
PostgreSQL. A tenant's report is scoped by `tenant_id`; `tenant_id=None` is the admin report
over all tenants.
"""

from __future__ import annotations

from datetime import date
from functools import partial
from typing import Any

from sqlalchemy import BigInteger, cast
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlmodel import and_, case, col, func
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.db import after_commit
from tenants.models import Tenant, UsageRecord, UsageRollup
from tenants.price.money import usd
from tenants.price.pricing import Price, PriceBook
from tenants.price.repository import PriceRepository
from tenants.usage.partitions import ensure_months, month_start
from tenants.usage.rollups import rollup_rows, upsert_statement

COUNTERS = ("runs", "requests", "input_tokens", "output_tokens", "total_tokens", "unpriced_runs")
_KNOWN_MONTHS: set[date] = set()
"""Months whose PostgreSQL partition this process has made sure of, and committed (bounded:
one per month)."""
TENANT_SCOPED = {"agent", "user"}
"""Dimensions whose values are names within one tenant (an agent name, a JWT `sub`): a report
over all tenants has a row per (tenant, value), with its `tenant_id`, never one row merging
different tenants' users named alike."""
_NULLABLE = {"key", "user"}
"""Dimensions whose value may be absent (stored as `""` in the rollups, answered as null)."""

_RAW_GROUP_COLUMNS: dict[str, Any] = {
    "day": UsageRecord.day,
    "agent": UsageRecord.agent,
    "model": UsageRecord.model,
    "key": UsageRecord.key_id,
    "user": UsageRecord.user,
    "tenant": UsageRecord.tenant_id,
}


def _render(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


async def _known(months: set[date]) -> None:
    _KNOWN_MONTHS.update(months)


class UsageRepository:
    """Writes usage records (and their rollups) and answers usage reports."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, records: list[UsageRecord]) -> int:
        """Insert a batch, price it and add it to the rollups (the caller's unit of work commits
        all of it or nothing; `session` must be a unit's, `Database.unit`).

        A run already stored is skipped, and only the rows really inserted reach the rollups,
        so a batch retried after an ambiguous failure is never counted twice. On PostgreSQL
        the partitions of the batch's months are made sure of first (once per month and
        process; again if one has gone since). Returns the number of records inserted.
        """
        if not records:
            return 0
        dialect = self.session.get_bind().dialect.name
        months = {month_start(record.day) for record in records}
        if dialect == "postgresql" and not months <= _KNOWN_MONTHS:
            await self._ensure(months)
        if dialect != "postgresql":
            return await self._insert(records, dialect)
        try:
            # A savepoint: a missing partition undoes this insert only, not the caller's unit.
            async with self.session.begin_nested():
                return await self._insert(records, dialect)
        except DBAPIError as exc:
            if "no partition" not in str(exc):
                raise
        # A partition this process knew of was dropped or rebuilt (retention, a migration):
        # create it again and write the batch once more.
        _KNOWN_MONTHS.clear()
        await self._ensure(months)
        return await self._insert(records, dialect)

    async def _ensure(self, months: set[date]) -> None:
        await ensure_months(self.session, months)
        # Known once committed: a unit that rolls back takes the new partitions with it.
        after_commit(self.session, partial(_known, months))

    async def _insert(self, records: list[UsageRecord], dialect: str) -> int:
        book = await PriceRepository(self.session).book()
        rows = [priced(record.model_dump(), book) for record in records]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        # PostgreSQL's partitioned table is unique on (run_id, segment, day): its unique keys
        # must hold the partition key, and a retried record keeps its day. SQLite's one table
        # on (run_id, segment).
        conflict = ["run_id", "segment"]
        if dialect == "postgresql":
            conflict.append("day")
        statement = (
            insert(UsageRecord)
            .on_conflict_do_nothing(index_elements=conflict)
            .returning(col(UsageRecord.run_id), col(UsageRecord.segment))
        )
        result = await self.session.exec(statement, params=rows)
        inserted = {(run_id, segment) for run_id, segment in result.all()}
        fresh = [row for row in rows if (row["run_id"], row["segment"]) in inserted]
        increments = rollup_rows(fresh)
        if increments:
            await self.session.exec(upsert_statement(dialect), params=increments)
        return len(fresh)

    async def window_totals(self, tenant_id: str, today: date) -> tuple[int, int, int]:
        """(total tokens today, pico-dollars spent today, pico-dollars spent this calendar
        month up to today) of one tenant, from the rollups."""
        r = UsageRollup
        today_only = col(r.day) == today
        statement: Any = sa_select(
            cast(func.sum(case((today_only, col(r.total_tokens)), else_=0)), BigInteger),
            cast(func.sum(case((today_only, col(r.cost_pico)), else_=0)), BigInteger),
            cast(func.sum(col(r.cost_pico)), BigInteger),
        ).where(
            col(r.tenant_id) == tenant_id,
            col(r.dimension) == "day",
            col(r.day) >= today.replace(day=1),
            col(r.day) <= today,
        )
        row = (await self.session.exec(statement)).one()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    async def window_totals_of(
        self, tenant_ids: list[str], today: date
    ) -> dict[str, tuple[int, int, int]]:
        """`window_totals` of several tenants in one query (a tenant without usage this
        month is absent)."""
        if not tenant_ids:
            return {}
        r = UsageRollup
        today_only = col(r.day) == today
        statement: Any = (
            sa_select(
                col(r.tenant_id),
                cast(func.sum(case((today_only, col(r.total_tokens)), else_=0)), BigInteger),
                cast(func.sum(case((today_only, col(r.cost_pico)), else_=0)), BigInteger),
                cast(func.sum(col(r.cost_pico)), BigInteger),
            )
            .where(
                col(r.tenant_id).in_(tenant_ids),
                col(r.dimension) == "day",
                col(r.day) >= today.replace(day=1),
                col(r.day) <= today,
            )
            .group_by(col(r.tenant_id))
        )
        rows = (await self.session.exec(statement)).all()
        return {row[0]: (int(row[1] or 0), int(row[2] or 0), int(row[3] or 0)) for row in rows}

    async def report(
        self, *, tenant_id: str | None, group_by: str, start: date, end: date
    ) -> dict[str, Any]:
        """One row per group value over `start..end` (inclusive days), from the rollups."""
        r = UsageRollup
        dimension = "day" if group_by == "tenant" else group_by
        group: Any = {"day": r.day, "tenant": r.tenant_id}.get(group_by, r.value)
        group_columns: list[Any] = [group]
        if group_by == "tenant":
            group_columns.append(Tenant.slug)
        elif tenant_id is None and group_by in TENANT_SCOPED:
            group_columns.append(r.tenant_id)
        # Sums cast back to BIGINT: PostgreSQL's sum(bigint) is NUMERIC, which the driver
        # decodes to Decimal (thousands of them for a report by user).
        statement: Any = sa_select(
            *group_columns,
            *(
                cast(func.sum(getattr(r, name)), BigInteger).label(name)
                for name in (*COUNTERS, "cost_pico", "unpriced_segments")
            ),
        ).where(col(r.dimension) == dimension, col(r.day) >= start, col(r.day) <= end)
        if group_by == "tenant":
            statement = statement.outerjoin(Tenant, col(Tenant.id) == col(r.tenant_id))
        if tenant_id is not None:
            statement = statement.where(col(r.tenant_id) == tenant_id)
        statement = statement.group_by(*group_columns)
        rows: list[Any] = list((await self.session.exec(statement)).all())
        if group_by in _NULLABLE:
            rows = [(row[0] or None, *row[1:]) for row in rows]
        report = _assemble(group_by, start, end, rows, scoped=tenant_id is None)
        if group_by == "model":
            by_day = await self.report(tenant_id=tenant_id, group_by="day", start=start, end=end)
            _runs_counted_once(report, by_day)
        return report

    async def raw_report(
        self, *, tenant_id: str | None, group_by: str, start: date, end: date
    ) -> dict[str, Any]:
        """The same report computed from the raw records (a scan: for reconciliation only)."""
        group = _RAW_GROUP_COLUMNS[group_by]
        group_columns: list[Any] = [group]
        if group_by == "tenant":
            group_columns.append(Tenant.slug)
        elif tenant_id is None and group_by in TENANT_SCOPED:
            group_columns.append(UsageRecord.tenant_id)
        statement: Any = sa_select(
            *group_columns,
            func.sum(case((col(UsageRecord.segment) == 0, 1), else_=0)).label("runs"),
            func.sum(UsageRecord.requests).label("requests"),
            func.sum(UsageRecord.input_tokens).label("input_tokens"),
            func.sum(UsageRecord.output_tokens).label("output_tokens"),
            func.sum(UsageRecord.total_tokens).label("total_tokens"),
            func.sum(
                case((and_(col(UsageRecord.unpriced), col(UsageRecord.segment) == 0), 1), else_=0)
            ).label("unpriced_runs"),
            func.sum(UsageRecord.cost_pico).label("cost_pico"),
            func.sum(case((col(UsageRecord.unpriced), 1), else_=0)).label("unpriced_segments"),
        ).where(col(UsageRecord.day) >= start, col(UsageRecord.day) <= end)
        if group_by == "tenant":
            statement = statement.outerjoin(Tenant, col(Tenant.id) == col(UsageRecord.tenant_id))
        if tenant_id is not None:
            statement = statement.where(col(UsageRecord.tenant_id) == tenant_id)
        if group_by == "model":  # a run that called several models is split below
            statement = statement.where(col(UsageRecord.model_usage).is_(None))
        statement = statement.group_by(*group_columns)
        rows: list[Any] = list((await self.session.exec(statement)).all())
        if group_by == "model":
            rows = await self._with_model_splits(rows, tenant_id, start, end)
        report = _assemble(group_by, start, end, rows, scoped=tenant_id is None)
        if group_by == "model":
            by_day = await self.raw_report(
                tenant_id=tenant_id, group_by="day", start=start, end=end
            )
            _runs_counted_once(report, by_day)
        return report

    async def _with_model_splits(
        self, rows: list[Any], tenant_id: str | None, start: date, end: date
    ) -> list[Any]:
        """The by-model rows plus the records that called several models, each model's share
        on its own row and the run counted under its own model (as the rollups do)."""
        statement: Any = sa_select(
            col(UsageRecord.model), col(UsageRecord.segment), col(UsageRecord.model_usage)
        ).where(
            col(UsageRecord.day) >= start,
            col(UsageRecord.day) <= end,
            col(UsageRecord.model_usage).is_not(None),
        )
        if tenant_id is not None:
            statement = statement.where(col(UsageRecord.tenant_id) == tenant_id)
        split = list((await self.session.exec(statement)).all())
        if not split:
            return rows
        # Per model: runs, the four token counters, unpriced_runs, cost_pico, unpriced_segments.
        sums: dict[str, list[int]] = {row[0]: [int(v or 0) for v in row[1:]] for row in rows}
        fields = ("requests", "input_tokens", "output_tokens", "total_tokens")
        for model, segment, breakdown in split:
            first = 1 if segment == 0 else 0
            sums.setdefault(model, [0] * 8)[0] += first
            for other, share in breakdown.items():
                counted = sums.setdefault(other, [0] * 8)
                for at, name in enumerate(fields, start=1):
                    counted[at] += share.get(name) or 0
                counted[5] += first if share.get("unpriced") else 0
                counted[6] += share.get("cost_pico") or 0
                counted[7] += 1 if share.get("unpriced") else 0
        return [(model, *values) for model, values in sums.items()]


def _runs_counted_once(by_model: dict[str, Any], by_day: dict[str, Any]) -> None:
    """A run that called several unpriced models is on each one's row: the by-model totals
    count it once, as every other grouping does (the day report's count)."""
    by_model["totals"]["unpriced_runs"] = by_day["totals"]["unpriced_runs"]


def _assemble(
    group_by: str, start: date, end: date, rows: Any, *, scoped: bool = False
) -> dict[str, Any]:
    """The report body from grouped rows: (group value, [slug or tenant id,] counters...,
    cost_pico, unpriced_segments); `scoped`: the report is over all tenants.

    One pass (a report by user has a thousand rows or more): each row's counters as ints,
    its rendered cost, its `unpriced` flag (any record of the row had no price: a row may
    hold only the resumed segment of a run, counted where it started), and the totals."""
    width = len(COUNTERS) + 1
    second = "tenant_slug" if group_by == "tenant" else None
    if scoped and group_by in TENANT_SCOPED:
        second = "tenant_id"
    sums = [0] * width
    data: list[dict[str, Any]] = []
    flagged_anywhere = False
    for row in rows:
        values = [int(value) if value else 0 for value in row[-width - 1 : -1]]
        flagged = bool(row[-1])
        item: dict[str, Any] = {group_by: _render(row[0])}
        if second is not None:
            item[second] = row[1]
        item.update(zip(COUNTERS, values, strict=False))
        item["cost_usd"] = usd(values[-1])
        item["unpriced"] = flagged
        flagged_anywhere = flagged_anywhere or flagged
        data.append(item)
        sums = [total + value for total, value in zip(sums, values, strict=True)]
    # Sorted here, not in SQL: SQLite and PostgreSQL place NULLs differently (here: last).
    data.sort(
        key=lambda item: (
            item[group_by] is None,
            item[group_by] or "",
            item.get("tenant_id") or "",
        )
    )
    totals: dict[str, Any] = dict(zip(COUNTERS, sums, strict=False))
    totals["cost_usd"] = usd(sums[-1])
    totals["unpriced"] = flagged_anywhere
    return {
        "object": "usage.report",
        "group_by": group_by,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "data": data,
        "totals": totals,
    }


def priced(row: dict[str, Any], book: PriceBook) -> dict[str, Any]:
    """The record with its cost under the prices in force when the run started: one model's
    price, or, for a run that called several models (`model_usage`), each model's calls at
    that model's price (unpriced when any model called had no price)."""
    breakdown = row.get("model_usage")
    if not breakdown:
        price = book.at(row["model"], row["created_at"])
        row["unpriced"] = price is None
        row["cost_pico"] = 0 if price is None else _cost(price, row)
        return row
    total, unpriced = 0, False
    for model, tokens in breakdown.items():
        price = book.at(model, row["created_at"])
        tokens["cost_pico"] = 0 if price is None else _cost(price, tokens)
        tokens["unpriced"] = price is None
        total += tokens["cost_pico"]
        unpriced = unpriced or price is None
    row["cost_pico"], row["unpriced"] = total, unpriced
    return row


def _cost(price: Price, tokens: dict[str, Any]) -> int:
    return price.cost(
        input_tokens=tokens["input_tokens"],
        output_tokens=tokens["output_tokens"],
        cached_tokens=tokens["cached_tokens"],
        reasoning_tokens=tokens["reasoning_tokens"],
    )
