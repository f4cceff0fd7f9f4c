"""Agent runs: request schema, execution (plain and streamed), error mapping, the /v1 routes."""
