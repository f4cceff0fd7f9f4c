"""Tool-signing secrets: created or rotated by an admin, shown once, stored encrypted."""
