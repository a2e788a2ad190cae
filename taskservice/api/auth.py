"""Bearer-token authentication, permission checks and the OAuth2 token endpoint.

The token endpoint sits where the official SDK posts (`/auth/v2/oauth2/tokens`). It
accepts JSON (what the SDK sends) or form encoding (RFC 6749), with the client id and
secret in the body or in HTTP Basic authentication, and the `password` and
`refresh_token` grants.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from taskservice.api.context import context_of
from taskservice.api.errors import (
    AccessTokenExpiredError,
    AccessTokenUnknownError,
    NoPermissionError,
    OAuth2Error,
    UserNotAuthenticatedError,
)
from taskservice.api.wire import WireResponse
from taskservice.auth.tokens import Caller, ExpiredTokenError, TokenError, UnknownTokenError

# Declares the scheme in the OpenAPI document; the checks below do the work.
bearer_scheme = HTTPBearer(auto_error=False, description="OAuth2 access token or API token")


async def optional_caller(request: Request) -> Caller | None:
    """Return the caller behind the Authorization header, or None when there is none."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UserNotAuthenticatedError("the Authorization header must be 'Bearer <access token>'")
    try:
        return await context_of(request).tokens.authenticate(token.strip())
    except UnknownTokenError as exc:
        raise AccessTokenUnknownError("the access token is not known; log in again or refresh it") from exc
    except ExpiredTokenError as exc:
        raise AccessTokenExpiredError("the access token has expired; refresh it") from exc


async def _caller_dependency(request: Request, _credentials: Any = Depends(bearer_scheme)) -> Caller | None:
    return await optional_caller(request)


def require(permission: str) -> Any:
    """Return a dependency that authenticates the request and checks a global permission."""

    async def dependency(caller: Caller | None = Depends(_caller_dependency)) -> Caller:
        if caller is None:
            raise UserNotAuthenticatedError("this endpoint needs a bearer token; log in first")
        if not caller.has(permission):
            raise NoPermissionError(f"permission {permission} is required")
        return caller

    return Depends(dependency)


def caller_if_any() -> Any:
    """Return a dependency that authenticates the request when it carries a token."""
    return Depends(_caller_dependency)


token_router = APIRouter()


# NOTE: failed logins are not rate-limited here, so a password can be guessed as fast as
# Argon2 verifies (about 8 per second per core); limit this path in the proxy in front.
@token_router.post("/auth/v2/oauth2/tokens", tags=["auth"], summary="OAuth2 token endpoint")
async def issue_tokens(request: Request) -> WireResponse:
    """Log in with the password grant or refresh with the refresh_token grant."""
    context = context_of(request)
    try:
        form = await _token_form(request)
        client_id, client_secret = _client_credentials(request, form)
        application_id = await context.tokens.check_client(client_id, client_secret)
        grant_type = form.get("grant_type")
        if grant_type == "password":
            if not form.get("username") or not form.get("password"):
                raise OAuth2Error("invalid_request", "the password grant needs username and password")
            issued = await context.tokens.password_grant(application_id, form["username"], form["password"])
        elif grant_type == "refresh_token":
            if not form.get("refresh_token"):
                raise OAuth2Error("invalid_request", "the refresh_token grant needs refresh_token")
            issued = await context.tokens.refresh_grant(application_id, form["refresh_token"])
        elif not grant_type:
            raise OAuth2Error("invalid_request", "grant_type is missing; use password or refresh_token")
        else:
            raise OAuth2Error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported; "
                                                        "use password or refresh_token")
    except TokenError as exc:
        status = 401 if exc.error == "invalid_client" else 400
        raise OAuth2Error(exc.error, exc.description, status) from exc
    return WireResponse(issued.body(), headers={"Cache-Control": "no-store"})


async def _token_form(request: Request) -> dict[str, str]:
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if "application/x-www-form-urlencoded" in content_type:
            pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
            return {key: value for key, value in pairs}
        body = orjson.loads(raw) if raw else {}
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OAuth2Error("invalid_request", "the body must be JSON or form-encoded") from exc
    if not isinstance(body, dict):
        raise OAuth2Error("invalid_request", "the body must be a JSON object")
    return {key: value for key, value in body.items() if isinstance(value, str)}


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuth2Error("invalid_client", "the Basic authorization header is malformed", 401) from exc
        client_id, _, client_secret = decoded.partition(":")
        return client_id, client_secret
    return form.get("client_id"), form.get("client_secret")
