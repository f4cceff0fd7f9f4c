"""Audit log: one event per admin mutation, listed at `GET /admin/audit`."""
