"""Column helpers shared by the tables: UTC timestamps and JSON documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field

from gateway.core.clock import utcnow


def created_at_field() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


def timestamp_field(*, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), index=index))


def json_field(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


__all__ = ["created_at_field", "datetime", "json_field", "timestamp_field"]
