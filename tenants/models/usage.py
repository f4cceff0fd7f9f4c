"""Usage records: one row per run, written in batches off the request path."""

from __future__ import annotations

import re
from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field

PARTITION_NAME = re.compile(r"^usage_records_(\d{4})_(\d{2})$")
"""A monthly partition of `usage_records` on PostgreSQL (`usage_records_YYYY_MM`). Created at
run time, not by the models: the migrations' autogenerate and schema check skip them."""


def is_partition(table_name: str) -> bool:
    """True for a monthly partition's table."""
    return PARTITION_NAME.match(table_name) is not None


class UsageRecord(SQLModel, table=True):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_tenant_day", "tenant_id", "day"),
        # A tenant's billing export walks its records in run-id order (keyset pages).
        Index("ix_usage_tenant_run", "tenant_id", "run_id"),
    )

    run_id: str = Field(primary_key=True, max_length=40)
    segment: int = Field(default=0, primary_key=True, sa_column_kwargs={"server_default": "0"})
    """0 for a run's first (or only) segment; a run resumed after an approval records each
    further segment under the same run id (reports count the run once, at segment 0)."""
    tenant_id: str = Field(max_length=40)
    key_id: str | None = Field(default=None, max_length=40)
    user: str | None = Field(default=None, max_length=256)
    agent: str = Field(max_length=64)
    agent_version: int = 0
    model: str = Field(max_length=128)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    model_usage: dict[str, dict[str, int]] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    """Per model, what a run that called more than its own model used: a handoff target or
    an input classifier on another model (`{model: {requests, input_tokens, ...,
    cost_pico}}`, each model priced at its own price; the counters above are the sums). None
    when every call went to `model`: SQL NULL, not JSON null (the reports find split runs by
    it)."""
    status: str = Field(max_length=32)
    """`completed`, `failed`, `cancelled` or `rate_limited` (a tripped guardrail is `failed`);
    `requires_action` for a segment that paused for an approval. Records written before
    2026-12-06 may say `guardrail_triggered`."""
    latency_ms: int = 0
    cost_pico: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """Cost in pico-dollars (1e-12 USD) under the model's price in force at `created_at`,
    filled by the writer; 0 when the model had no price (`unpriced`)."""
    unpriced: bool = False
    """True when the model had no price when the run started."""
    day: date = Field(index=True)
    """UTC day of `created_at`: the unit of the usage reports' date ranges."""
    created_at: datetime = created_at_field()
