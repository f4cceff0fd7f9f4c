"""Tenant tools at run time: signed HTTP tool calls (one pooled client), their signing
secrets, and the run context the calls carry. The egress guard they connect through is
`gateway.core.egress` (shared with MCP servers and tenant upstreams)."""
