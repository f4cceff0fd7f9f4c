"""Usage records as ASCII JSON lines (the spill and dead-letter files, dead-letter rows).

`json.dumps` escapes NUL and lone surrogates (`\\u0000`, `\\ud800`), so any record, even one
the database refused, has a text form that every file system and database can hold.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from tenants.models import UsageRecord


def record_json(record: UsageRecord) -> str:
    """One record as a line of ASCII JSON (no newline)."""
    fields: dict[str, Any] = {}
    for name in UsageRecord.model_fields:
        value = getattr(record, name, None)
        fields[name] = value.isoformat() if isinstance(value, date | datetime) else value
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))


def record_from_json(line: str) -> UsageRecord:
    """The record a `record_json` line holds (dates parsed back; no other validation, so a
    refused record comes back exactly as it was)."""
    fields = json.loads(line)
    fields["day"] = date.fromisoformat(fields["day"])
    fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return UsageRecord.model_construct(**fields)
