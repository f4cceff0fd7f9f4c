"""End-user JWT configuration per tenant: HS256 secret (generated) or RS256/ES256 keys."""
