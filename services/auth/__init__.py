"""Auth service: tenants, users, passwords, JWT issuing and JWKS, refresh tokens, API keys."""
