"""The HTTP application: the ExtraHorizon-compatible API, health, readiness and metrics.

`create_app(health)` serves only /health/live, /health/ready and /metrics.
With settings it also serves the Tasks, Dispatchers and OAuth2 token routes, and with a
database pool its lifespan opens what they use and starts and stops the runtime processes
of synchronous runs. Without a pool the routes only describe themselves (OpenAPI export).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskservice import metrics
from taskservice.api import api_functions, dispatchers, functions, redrive, schedules, tasks
from taskservice.api.auth import token_router
from taskservice.api.context import ApiContext
from taskservice.api.errors import (
    ApiError,
    BodyFormatError,
    EmptyBodyError,
    EndpointError,
    FieldFormatError,
    InvalidFunctionCodeError,
    InvalidFunctionConfigurationError,
    InvalidFunctionNameError,
    MissingRequiredFieldsError,
    OAuth2Error,
    ResourceUnknownError,
    ServerError,
)
from taskservice.api.execution import Executor
from taskservice.api.operations import operations_router
from taskservice.api.wire import WireResponse
from taskservice.auth.tokens import TokenService
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.store.api_repository import ApiRepository
from taskservice.store.auth_repository import AuthRepository
from taskservice.store.db import DataError, Pool
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

_METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"))


def create_app(health: Health, settings: Settings | None = None, pool: Pool | None = None) -> FastAPI:
    """Build the application; the API routes need settings, and a pool to serve requests."""
    lifespan = _lifespan(settings, pool) if settings is not None and pool is not None else None
    app = FastAPI(
        title="Task Service",
        version="0.1.0",
        description="ExtraHorizon-compatible Tasks and Dispatchers API: functions, tasks, schedules, "
                    "API functions, dispatchers and an OAuth2 token endpoint.",
        lifespan=lifespan,
    )
    app.include_router(operations_router(health))
    if settings is not None:
        for router in (token_router, functions.router, schedules.router, api_functions.router, dispatchers.router,
                       redrive.router, tasks.router):
            app.include_router(router)
        _add_error_handlers(app)
        app.add_middleware(_BodyLimit, max_bytes=settings.http_max_body_bytes)
        app.add_middleware(_RequestMetrics)
    return app


def _lifespan(settings: Settings, pool: Pool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repository = Repository(pool)
        api = ApiRepository(pool)
        auth = AuthRepository(pool)
        executor = Executor(settings, repository, api)
        tokens = TokenService(auth, settings.access_token_lifetime_s, settings.refresh_token_lifetime_s)
        app.state.api = ApiContext(settings, pool, repository, api, auth, tokens, executor)
        try:
            yield
        finally:
            await executor.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return WireResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(OAuth2Error)
    async def oauth2_error(_request: Request, exc: OAuth2Error) -> Response:
        return WireResponse(exc.body(), status_code=exc.status, headers={"Cache-Control": "no-store"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        error = validation_error(request, list(exc.errors()))
        return WireResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            error: ApiError = EndpointError(f"method {request.method} is not supported on {request.url.path}")
        elif exc.status_code == 404:
            error = ResourceUnknownError(f"no endpoint at {request.url.path}")
        else:
            error = ServerError(str(exc.detail))
            return WireResponse(error.body(), status_code=exc.status_code)
        return WireResponse(error.body(), status_code=error.status)

    @app.exception_handler(DataError)
    async def unstorable_value(request: Request, exc: DataError) -> Response:
        # A value PostgreSQL rejects, such as a NUL character in text: the client's fault.
        error = FieldFormatError(f"a value in the request cannot be stored: {exc}")
        return WireResponse(error.body(), status_code=error.status)

    @app.exception_handler(DatabaseUnavailableError)
    async def database_unavailable(request: Request, exc: DatabaseUnavailableError) -> Response:
        logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc,
                       extra={"event": "api_database_unavailable"})
        return WireResponse(ServerError("the database is unavailable; retry later").body(), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("request %s %s failed", request.method, request.url.path,
                         extra={"event": "api_request_failed"})
        return WireResponse(ServerError("unexpected server error; see the service log").body(), status_code=500)


def validation_error(request: Request, errors: list[dict[str, Any]]) -> ApiError:
    """Map FastAPI's body validation errors to the ExtraHorizon error codes."""
    for error in errors:
        if error["type"] == "json_invalid":
            return BodyFormatError(f"the body is not valid JSON: {error.get('ctx', {}).get('error', error['msg'])}")
    first = errors[0]
    location = tuple(first["loc"])
    if location == ("body",):
        if first["type"] == "missing":
            return EmptyBodyError("this endpoint needs a JSON body")
        return BodyFormatError("the body must be a JSON object")
    field = ".".join(str(part) for part in location[1:]) or "body"
    message = f"{field}: {first['msg']}"
    if first["type"] == "missing":
        return MissingRequiredFieldsError(f"{field} is required")
    if first["type"] == "extra_forbidden":
        return FieldFormatError(f"{field} is not a field of this body; remove it or correct its spelling")
    path = request.url.path.rstrip("/")
    if request.method in ("POST", "PUT") and path.startswith("/tasks/v1/functions") and not path.endswith("/execute"):
        top = location[1] if len(location) > 1 else ""
        if top == "name":
            return InvalidFunctionNameError(message)
        if top == "code":
            return InvalidFunctionCodeError(message)
        return InvalidFunctionConfigurationError(message)
    return FieldFormatError(message)


class _BodyLimit:
    """Rejects request bodies over max_bytes with FIELD_FORMAT_EXCEPTION before they are read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = FieldFormatError(f"the request body is larger than {self.max_bytes} bytes")
        await WireResponse(error.body(), status_code=413)(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised inside the body-limit middleware when a streamed body passes the limit."""


class _RequestMetrics:
    """Observes each request's duration by method, route template and status code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "OTHER")
            metrics.API_REQUEST_SECONDS.labels(
                method=method if method in _METHODS else "OTHER", route=template, status=str(status),
            ).observe(time.perf_counter() - started)
