"""Usage records the database refused: kept here, never dropped, for an operator to inspect."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field


class UsageDeadLetter(SQLModel, table=True):
    """One usage record that could not be stored, with why.

    `record` is the record as ASCII JSON (NUL and lone surrogates escaped), so whatever made
    the insert fail can be stored here; `run_id` and `tenant_id` are copied only when they are
    themselves storable."""

    __tablename__ = "usage_dead_letters"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, max_length=64, index=True)
    tenant_id: str | None = Field(default=None, max_length=64)
    reason: str = Field(max_length=1000)
    """The database's error (type and message, no SQL, no parameters)."""
    record: str
    """The refused record as ASCII JSON."""
    created_at: datetime = created_at_field()
