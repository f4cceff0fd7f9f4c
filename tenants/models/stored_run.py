"""Stored runs: runs paused for a human decision (their serialised SDK state) and what became
of them after they resumed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field

WAITING = "requires_action"
"""A stored run's status while it waits for decisions."""


class StoredRun(SQLModel, table=True):
    __tablename__ = "stored_runs"

    id: str = Field(primary_key=True, max_length=40)
    """The run id (`run_…`), the same across every segment of the run."""
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    user: str | None = Field(default=None, max_length=256)
    """The end user (JWT `sub`) who started it; None for an API key."""
    agent: str = Field(max_length=64)
    agent_version: int
    graph: dict[str, int] | None = json_field()
    """`{agent name: version}` of every agent of the run's graph when it paused (the entry
    agent and its handoff targets): a resume runs on exactly these. None for runs paused
    before revision 0012 (they resume with the targets' active versions)."""
    model: str = Field(max_length=128)
    status: str = Field(max_length=16)
    """`requires_action` (waiting for decisions), `resuming` (claimed by one resume),
    `completed` or `failed`."""
    state: str | None = Field(default=None, sa_column=Column(Text))
    """The Agents SDK's serialised run state while the run waits; cleared once it resumed."""
    pending: list[dict[str, Any]] | None = json_field()
    """`[{"id", "tool", "arguments"}]`: the calls waiting for a decision."""
    conversation_id: str | None = Field(default=None, index=True, max_length=40)
    history_items: int = 0
    """How many conversation items preceded the paused turn's input."""
    output: Any = json_field()
    usage: dict[str, int] | None = json_field()
    """The run's usage over all its segments so far."""
    error: dict[str, Any] | None = json_field()
    """How a resumed run failed: the error object its answer carried (`{"type", "code",
    "message", "param"}`); None otherwise (and for runs that failed before revision 0013)."""
    segments: int = 1
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()
    expires_at: datetime | None = timestamp_field(index=True)
    """A waiting run expires (404) after this."""
