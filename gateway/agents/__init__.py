"""Agent runtime: spec -> SDK Agent (cached), tools, upstream providers, usage hooks."""
