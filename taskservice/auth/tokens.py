"""OAuth2 grants, bearer-token authentication and API tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from taskservice.auth.hashing import new_token, token_digest, verify_secret
from taskservice.ids import new_object_id
from taskservice.store.auth_repository import AuthRepository


@dataclass(frozen=True)
class Caller:
    """The authenticated user and OAuth2 application behind a request."""

    user_id: str
    application_id: str | None
    permissions: frozenset[str]

    def has(self, permission: str, function_name: str | None = None) -> bool:
        """Return whether the caller has permission, globally or for function_name."""
        if permission in self.permissions:
            return True
        return function_name is not None and f"{permission}:{function_name}" in self.permissions


class TokenError(Exception):
    """Raised when a grant fails; `error` is the RFC 6749 error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class UnknownTokenError(Exception):
    """Raised when a bearer token is not known."""


class ExpiredTokenError(Exception):
    """Raised when a bearer token is known but expired."""


@dataclass(frozen=True)
class IssuedTokens:
    """A new access token with its refresh token, as returned by the token endpoint."""

    access_token: str
    refresh_token: str
    expires_in_s: float
    user_id: str
    application_id: str

    def body(self) -> dict[str, Any]:
        """Build the RFC 6749 token response with ExtraHorizon's user_id and application_id."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": int(self.expires_in_s),
            "refresh_token": self.refresh_token,
            "user_id": self.user_id,
            "application_id": self.application_id,
        }


# Seconds a valid token's caller is kept in memory. A revoked token, a deleted user or a
# permission change takes effect within this time; an expired token is never served.
AUTHENTICATION_CACHE_S = 2.0
AUTHENTICATION_CACHE_SIZE = 10_000


class TokenService:
    """Issues and checks tokens; secrets are compared through their hashes only."""

    def __init__(self, repository: AuthRepository, access_lifetime_s: float, refresh_lifetime_s: float) -> None:
        self._repository = repository
        self._access_lifetime_s = access_lifetime_s
        self._refresh_lifetime_s = refresh_lifetime_s
        self._cache: dict[str, tuple[Caller, float]] = {}

    async def authenticate(self, access_token: str) -> Caller:
        """Return the caller behind a bearer token; raise UnknownTokenError or ExpiredTokenError."""
        digest = token_digest(access_token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self._repository.authenticate_token(digest)
        if row is None:
            raise UnknownTokenError("the access token is not known")
        if row["expired"]:
            raise ExpiredTokenError("the access token has expired")
        caller = Caller(row["user_id"], row["application_id"], frozenset(row["permissions"]))
        if len(self._cache) >= AUTHENTICATION_CACHE_SIZE:
            self._cache.clear()
        self._cache[digest] = (caller, now + min(AUTHENTICATION_CACHE_S, row["remaining_s"]))
        return caller

    async def check_client(self, client_id: str | None, client_secret: str | None) -> str:
        """Return the application id of a valid client; raise TokenError invalid_client."""
        if not client_id:
            raise TokenError("invalid_client", "client_id is missing; pass the OAuth2 client id")
        client = await self._repository.get_oauth2_client(client_id)
        if client is None:
            raise TokenError("invalid_client", f"OAuth2 client {client_id!r} is not known")
        if client["secret_hash"] is not None and not verify_secret(client["secret_hash"], client_secret or ""):
            raise TokenError("invalid_client", f"the secret of OAuth2 client {client_id!r} is missing or wrong")
        return client["id"]

    async def password_grant(self, application_id: str, username: str, password: str) -> IssuedTokens:
        """Log a user in with email and password."""
        user = await self._repository.get_user_by_email(username)
        if not verify_secret(user["password_hash"] if user else None, password) or user is None:
            raise TokenError("invalid_grant", "the username or password is wrong")
        access, refresh = new_token(), new_token()
        await self._repository.insert_token({
            "id": new_object_id(), "user_id": user["id"], "application_id": application_id,
            "access_token_hash": token_digest(access), "access_lifetime_s": self._access_lifetime_s,
            "refresh_token_hash": token_digest(refresh), "refresh_lifetime_s": self._refresh_lifetime_s,
        })
        return IssuedTokens(access, refresh, self._access_lifetime_s, user["id"], application_id)

    async def refresh_grant(self, application_id: str, refresh_token: str) -> IssuedTokens:
        """Swap a refresh token for a new token pair; the refresh token can be used once."""
        old_hash = token_digest(refresh_token)
        access, refresh = new_token(), new_token()
        owner = await self._repository.rotate_refresh_token(
            old_hash, new_object_id(), token_digest(access), self._access_lifetime_s, token_digest(refresh),
            self._refresh_lifetime_s)
        if owner is None:
            expired = await self._repository.refresh_token_expired(old_hash)
            state = "has expired; log in again" if expired else "is not known"
            raise TokenError("invalid_grant", f"the refresh token {state}")
        if owner["application_id"] not in (None, application_id):
            raise TokenError("invalid_grant", "the refresh token was issued to another OAuth2 client")
        return IssuedTokens(access, refresh, self._access_lifetime_s, owner["user_id"], application_id)


async def create_api_token(repository: AuthRepository, email: str, lifetime_s: float,
                           description: str | None) -> tuple[str, str]:
    """Create a long-lived bearer token without refresh token for a user; return (id, token)."""
    user = await repository.get_user_by_email(email)
    if user is None:
        raise LookupError(f"no user with email {email!r}; create it with `taskservice users create`")
    token = new_token()
    token_id = new_object_id()
    await repository.insert_token({
        "id": token_id, "user_id": user["id"], "access_token_hash": token_digest(token),
        "access_lifetime_s": lifetime_s, "description": description,
    })
    return token_id, token

