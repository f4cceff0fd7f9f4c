"""Shared infrastructure: settings, database, errors, identifiers, clock."""
