"""Alembic migrations, run by `gateway db upgrade` (see `gateway.core.migrate`)."""
