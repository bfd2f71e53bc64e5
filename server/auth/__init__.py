"""Authentication: passwords, tokens, the request principal."""
