"""Tenants: create, list, update (name, status, limits), soft delete."""
