"""Usage records: batched writes and the usage reports."""
