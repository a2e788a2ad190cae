"""Connection pools; asyncpg is imported only in this package, which translates its errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
import orjson

from taskservice import metrics
from taskservice.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

APPLICATION_NAME = "taskservice"

# Errors after which a retry on a fresh connection can succeed.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    # "database ... is not currently accepting connections" (ALLOW_CONNECTIONS false).
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # A server that came back read-only, for example a replica during a failover.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # asyncpg can hand out a pooled connection whose server session was killed; its
    # protocol state is then broken ("cannot switch to state"), and the pool is expired.
    asyncpg.exceptions.InternalClientError,
)

# Errors that mean the statement's data is wrong and will fail the same way on retry.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.ProgramLimitExceededError,
)

UniqueViolationError = asyncpg.exceptions.UniqueViolationError
Connection = asyncpg.Connection
Pool = asyncpg.Pool
Record = asyncpg.Record


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            format="text",
        )


async def create_pool(dsn: str, *, size: int, role: str, durable_commits: bool = True) -> asyncpg.Pool:
    """Open a pool whose connections decode json with orjson and name the role in pg_stat_activity.

    With durable_commits off, a commit returns before its WAL reaches disk. A server
    crash can then lose the last commits, but only whole transactions. That suits work
    that is repeated when lost. A lost task claim or outcome leaves the task to the lease
    sweep, and a lost outbox mark republishes the message. Ingest keeps durable commits,
    because it commits Kafka offsets after them.
    """
    server_settings = {"application_name": f"{APPLICATION_NAME}-{role}"}
    if not durable_commits:
        server_settings["synchronous_commit"] = "off"
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            init=_init_connection,
            server_settings=server_settings,
            command_timeout=60,
        )
    except _CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


async def connect(dsn: str, *, role: str) -> asyncpg.Connection:
    """Open one connection, used for LISTEN and for migrations."""
    try:
        connection = await asyncpg.connect(
            dsn, server_settings={"application_name": f"{APPLICATION_NAME}-{role}"}
        )
    except _CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
    await _init_connection(connection)
    return connection


def is_connection_error(exc: BaseException) -> bool:
    """Return whether exc means the database or the connection went away."""
    return isinstance(exc, _CONNECTION_ERRORS) or isinstance(exc, DatabaseUnavailableError)


@contextlib.asynccontextmanager
async def translate_errors(operation: str, pool: asyncpg.Pool | None = None) -> AsyncIterator[None]:
    """Turn connection failures into DatabaseUnavailableError and count them.

    When the failure left a connection in a broken protocol state, every connection of
    pool is replaced before the caller retries.
    """
    try:
        yield
    except _CONNECTION_ERRORS as exc:
        metrics.DATABASE_ERRORS.labels(operation=operation).inc()
        if pool is not None and isinstance(exc, asyncpg.exceptions.InternalClientError):
            await pool.expire_connections()
        raise DatabaseUnavailableError(f"{operation} failed: {type(exc).__name__}: {exc}") from exc


def is_data_error(exc: BaseException) -> bool:
    """Return whether exc means the statement's values are invalid, so a retry cannot help."""
    return isinstance(exc, _DATA_ERRORS)


async def retry_until_done(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    stopping: asyncio.Event | None = None,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
) -> T:
    """Run call until it succeeds, backing off while the database is unreachable.

    Only connection failures are retried; any other error propagates. When stopping is
    set during an outage the last DatabaseUnavailableError is raised.
    """
    delay = initial_delay_s
    attempt = 0
    while True:
        try:
            async with translate_errors(operation):
                return await call()
        except DatabaseUnavailableError as exc:
            attempt += 1
            if stopping is not None and stopping.is_set():
                raise
            log = logger.warning if attempt == 1 or attempt % 20 == 0 else logger.debug
            log(
                "database unavailable, retrying in %.1f s",
                delay,
                extra={"event": "database_retry", "operation": operation, "attempt": attempt, "error": str(exc)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)

# Errors of a statement that will fail the same way on retry, such as a value that the
# column type rejects, and the root of every server error.
DataError = asyncpg.exceptions.DataError
PostgresError = asyncpg.PostgresError
