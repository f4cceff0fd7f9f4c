"""Tenant upstreams: a tenant's own OpenAI-compatible endpoint and key, named per tenant."""
