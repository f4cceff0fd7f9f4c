"""API keys: format, hashing, issue/list/revoke."""
