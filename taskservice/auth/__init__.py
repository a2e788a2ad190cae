"""Users, permissions, OAuth2 clients and tokens of the HTTP API."""
