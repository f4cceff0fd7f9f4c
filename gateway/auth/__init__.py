"""Tenant authentication: API key (or, later, JWT) -> Principal."""
