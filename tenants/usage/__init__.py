"""Usage records: batched writes and the usage reports (SPEC §5.2)."""
