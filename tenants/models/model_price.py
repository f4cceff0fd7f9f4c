"""Model prices: one row per price change, never updated, so every past run keeps its price."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Index
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field


class ModelPrice(SQLModel, table=True):
    __tablename__ = "model_prices"
    __table_args__ = (Index("ix_model_prices_model_effective", "model", "effective_at"),)

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=128)
    effective_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """From when this price applies (a run is priced by the row in force at its start)."""
    priced: bool = True
    """False: from `effective_at` the model has no price (its runs cost 0, flagged unpriced)."""
    input_pico: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """Per input token, in pico-dollars (= micro-dollars per million tokens)."""
    cached_input_pico: int | None = Field(default=None, sa_column=Column(BigInteger))
    """Per cached input token (None: the input price)."""
    output_pico: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    """Per output token."""
    reasoning_pico: int | None = Field(default=None, sa_column=Column(BigInteger))
    """Per reasoning token (None: the output price)."""
    created_at: datetime = created_at_field()
