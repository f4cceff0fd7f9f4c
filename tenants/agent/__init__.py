"""Agent specs: validation, versions, activation."""
