"""Admin users: operators who log in at `POST /admin/login` (Argon2 password hashes)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field


class AdminUser(SQLModel, table=True):
    __tablename__ = "admin_users"

    id: str = Field(primary_key=True, max_length=40)
    username: str = Field(unique=True, index=True, max_length=64)
    role: str = Field(max_length=16)
    """`admin` (everything) or `viewer` (GET only)."""
    password_hash: str = Field(max_length=255)
    created_at: datetime = created_at_field()
