"""Usage rollups: the counters of usage records summed per (tenant, UTC day, dimension, value).

Written in the same transaction as the raw records they sum (an upsert per batch), so every
usage report reads a few rows per day instead of every run.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel


def _counter() -> int:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False))  # type: ignore[no-any-return]


class UsageRollup(SQLModel, table=True):
    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_dimension_day", "dimension", "day"),)

    tenant_id: str = Field(primary_key=True, max_length=40)
    dimension: str = Field(primary_key=True, max_length=8)
    """`day` (the tenant's day total), `agent`, `model`, `key` or `user`."""
    day: date = Field(primary_key=True)
    value: str = Field(primary_key=True, max_length=256)
    """The agent, model, key id or user; `""` for the `day` dimension and for runs without a
    key id or user."""
    runs: int = _counter()
    requests: int = _counter()
    input_tokens: int = _counter()
    output_tokens: int = _counter()
    cached_tokens: int = _counter()
    reasoning_tokens: int = _counter()
    total_tokens: int = _counter()
    cost_pico: int = _counter()
    unpriced_runs: int = _counter()
    """Runs of the row whose model had no price, counted once, where the run started."""
    unpriced_segments: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    """Records of the row with no price: any segment of a run, any model's share of one. The
    report row's `unpriced` flag (a row may hold only a resumed segment, and no run)."""
