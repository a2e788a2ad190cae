"""Repository of users, OAuth2 clients and tokens: one method per `api_*` query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskservice.store import queries
from taskservice.store.api_repository import _already_exists
from taskservice.store.db import Pool, Record, UniqueViolationError
from taskservice.store.repository import _translated


class AuthRepository:
    """Runs the user, client and token queries on a pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # Users

    @_translated
    async def count_users(self) -> int:
        """Return the number of users."""
        return await self.pool.fetchval(queries.api_count_users)

    @_translated
    async def insert_user(self, user_id: str, email: str, password_hash: str, permissions: Sequence[str]) -> None:
        """Insert a user; raise AlreadyExistsError when the email is taken."""
        try:
            await self.pool.execute(queries.api_insert_user, user_id, email, password_hash, list(permissions))
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def get_user_by_email(self, email: str) -> Record | None:
        """Return a user with its password hash."""
        return await self.pool.fetchrow(queries.api_get_user_by_email, email)

    @_translated
    async def list_users(self) -> list[Record]:
        """Return every user without password hashes."""
        return await self.pool.fetch(queries.api_list_users)

    @_translated
    async def set_user_permissions(self, email: str, permissions: Sequence[str]) -> bool:
        """Replace a user's permissions; return whether the user exists."""
        return await self.pool.fetchval(queries.api_set_user_permissions, email, list(permissions)) is not None

    @_translated
    async def set_user_password(self, email: str, password_hash: str) -> bool:
        """Replace a user's password hash; return whether the user exists."""
        return await self.pool.fetchval(queries.api_set_user_password, email, password_hash) is not None

    @_translated
    async def delete_user(self, email: str) -> bool:
        """Delete a user and its tokens; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_user, email) is not None

    # OAuth2 clients

    @_translated
    async def insert_oauth2_client(self, application_id: str, client_id: str, secret_hash: str | None,
                                   name: str) -> None:
        """Insert a client; raise AlreadyExistsError when the client id is taken."""
        try:
            await self.pool.execute(queries.api_insert_oauth2_client, application_id, client_id, secret_hash, name)
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def get_oauth2_client(self, client_id: str) -> Record | None:
        """Return a client with its secret hash."""
        return await self.pool.fetchrow(queries.api_get_oauth2_client, client_id)

    @_translated
    async def list_oauth2_clients(self) -> list[Record]:
        """Return every client without secret hashes."""
        return await self.pool.fetch(queries.api_list_oauth2_clients)

    @_translated
    async def delete_oauth2_client(self, client_id: str) -> bool:
        """Delete a client and the tokens issued to it; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_oauth2_client, client_id) is not None

    # Tokens

    @_translated
    async def insert_token(self, token: dict[str, Any]) -> None:
        """Insert a login (with refresh token) or an API token (without)."""
        await self.pool.execute(
            queries.api_insert_token, token["id"], token["user_id"], token.get("application_id"),
            token["access_token_hash"], token["access_lifetime_s"], token.get("refresh_token_hash"),
            token.get("refresh_lifetime_s"), token.get("description"),
        )

    @_translated
    async def rotate_refresh_token(self, old_refresh_hash: str, token_id: str, access_hash: str,
                                   access_lifetime_s: float, refresh_hash: str,
                                   refresh_lifetime_s: float) -> Record | None:
        """Consume a valid refresh token and store a new pair under token_id; return the owner, or None."""
        return await self.pool.fetchrow(queries.api_rotate_refresh_token, old_refresh_hash, access_hash,
                                        access_lifetime_s, refresh_hash, refresh_lifetime_s, token_id)

    @_translated
    async def refresh_token_expired(self, refresh_hash: str) -> bool | None:
        """Return whether a refresh token expired, or None when it is unknown."""
        return await self.pool.fetchval(queries.api_refresh_token_expired, refresh_hash)

    @_translated
    async def authenticate_token(self, access_hash: str) -> Record | None:
        """Return the user, application, permissions and expiry state behind a token."""
        return await self.pool.fetchrow(queries.api_authenticate_token, access_hash)

    @_translated
    async def list_tokens(self, email: str | None) -> list[Record]:
        """Return tokens, of one user when email is given."""
        return await self.pool.fetch(queries.api_list_tokens, email)

    @_translated
    async def delete_token(self, token_id: str) -> bool:
        """Delete a token; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_token, token_id) is not None
