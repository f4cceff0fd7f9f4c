"""Admin authentication for the /admin routes."""
