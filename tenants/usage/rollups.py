"""Rollups of usage records: what a batch adds to them, and the upsert that adds it.

A batch of records becomes one rollup row per (tenant, dimension, UTC day, value) it touches,
five dimensions per record (`day`, `agent`, `model`, `key`, `user`). A run that called several
models (`model_usage`) adds each model's own share to that model's row, and counts as a run of
its own model only. The upsert adds the
batch's counters to the stored ones (`runs = runs + excluded.runs`, ...), so concurrent writers
(several replicas) add up instead of overwriting. Rows are sorted by primary key so two
transactions upserting overlapping rows lock them in the same order (no deadlock).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tenants.models.usage_rollup import UsageRollup

DIMENSIONS: dict[str, str | None] = {
    "day": None,
    "agent": "agent",
    "model": "model",
    "key": "key_id",
    "user": "user",
}
"""Rollup dimension -> the record field whose value it groups by (None: the day itself)."""

SUMMED = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_pico",
)
COUNTER_COLUMNS = ("runs", *SUMMED, "unpriced_runs", "unpriced_segments")
PRIMARY_KEY = ("tenant_id", "dimension", "day", "value")


def rollup_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rollup increments of these records (dicts of `UsageRecord` fields, priced)."""
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(key: tuple[Any, ...], runs: int, unpriced: int, counters: dict[str, Any]) -> None:
        """`unpriced`: 1 when these counters had no price (one more `unpriced_segments`)."""
        row = totals.get(key)
        if row is None:
            row = dict(zip(PRIMARY_KEY, key, strict=True))
            row.update(dict.fromkeys(COUNTER_COLUMNS, 0))
            totals[key] = row
        row["runs"] += runs
        row["unpriced_segments"] += unpriced
        for name in SUMMED:
            row[name] += counters.get(name) or 0

    def flag_run(key: tuple[Any, ...]) -> None:
        totals[key]["unpriced_runs"] += 1

    for record in records:
        first = 1 if record.get("segment", 0) == 0 else 0  # later segments: tokens only
        tenant, day = record["tenant_id"], record["day"]
        breakdown = record.get("model_usage")
        for dimension, field in DIMENSIONS.items():
            if dimension == "model" and breakdown:
                add((tenant, dimension, day, record["model"]), first, 0, {})
                for model, share in breakdown.items():
                    key = (tenant, dimension, day, model)
                    add(key, 0, 1 if share.get("unpriced") else 0, share)
                    if first and share.get("unpriced"):
                        flag_run(key)  # the run is unpriced on each unpriced model's row
                continue
            key = (tenant, dimension, day, "" if field is None else (record[field] or ""))
            add(key, first, 1 if record["unpriced"] else 0, record)
            if first and record["unpriced"]:
                flag_run(key)
    return [totals[key] for key in sorted(totals)]


def upsert_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (primary key) DO UPDATE SET counter = counter + excluded`."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(UsageRollup)
    table = UsageRollup.__table__  # type: ignore[attr-defined]
    return statement.on_conflict_do_update(
        index_elements=list(PRIMARY_KEY),
        set_={name: table.c[name] + statement.excluded[name] for name in COUNTER_COLUMNS},
    )
