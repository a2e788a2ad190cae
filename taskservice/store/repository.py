"""Repository: one method per named query in `queries/pipeline.py`, with the same name."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import orjson

from taskservice.store import queries
from taskservice.store.db import Connection, Pool, Record, translate_errors

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL text and jsonb cannot hold NUL. The documented rule replaces it, wherever it
# appears in stored JSON, with U+FFFD. The lookbehind skips an escaped backslash followed
# by the letters "u0000", which is ordinary text.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def encode_json_rows(rows: Sequence[dict[str, Any]] | Sequence[Any]) -> str:
    """Encode rows for a `$1::text::jsonb` parameter, replacing NUL characters."""
    text = orjson.dumps(rows).decode()
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return text


def _translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Raise DatabaseUnavailableError for connection failures, counted under the method's name."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        pool = getattr(args[0], "pool", None) if args else None
        async with translate_errors(method.__name__, pool):
            return await method(*args, **kwargs)

    return wrapper


class Repository:
    """Runs the named queries on a pool, or on a given connection inside a transaction."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # Tasks

    @_translated
    async def insert_tasks(self, rows: Sequence[dict[str, Any]], connection: Connection | None = None) -> list[Record]:
        """Insert task rows, skipping existing idempotency keys; return the rows created."""
        if not rows:
            return []
        executor = connection or self.pool
        return await executor.fetch(queries.insert_tasks, encode_json_rows(rows))

    @_translated
    async def claim_tasks(
        self, limit: int, worker_id: str, lease_s: float, max_running: int | None = None
    ) -> list[Record]:
        """Move up to limit due tasks to inProgress for this worker, in queue order, within the limits."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(queries.lock_claims)
            rows = await connection.fetch(queries.claim_tasks, limit, worker_id, lease_s, max_running)
        return sorted(rows, key=lambda row: (-row["priority"], row["start_timestamp"], row["id"]))

    @_translated
    async def next_due_timestamp(self) -> datetime | None:
        """Return the earliest start time among tasks not yet due."""
        return await self.pool.fetchval(queries.next_due_timestamp)

    @_translated
    async def finish_tasks(
        self,
        outcomes: Sequence[dict[str, Any]],
        results_topic: str,
        task_failed_topic: str = "",
        connection: Connection | None = None,
    ) -> list[Record]:
        """Store run outcomes with their retries, result messages and logs; return the tasks changed."""
        if not outcomes:
            return []
        executor = connection or self.pool
        return await executor.fetch(queries.finish_tasks, encode_json_rows(outcomes), results_topic, task_failed_topic)

    @_translated
    async def renew_leases(self, task_ids: Sequence[str], worker_id: str, lease_s: float) -> list[Record]:
        """Extend the leases of running tasks; return the ids still held and their cancel flags."""
        return await self.pool.fetch(queries.renew_leases, list(task_ids), worker_id, lease_s)

    @_translated
    async def lock_expired_leases(self, connection: Connection, limit: int) -> list[Record]:
        """Lock in-progress tasks whose lease expired, inside the caller's transaction."""
        return await connection.fetch(queries.lock_expired_leases, limit)

    @_translated
    async def cancel_task(self, task_id: str, include_running: bool) -> Record | None:
        """Cancel a new task, or flag a running one; return the status before and after, or None if unknown."""
        return await self.pool.fetchrow(queries.cancel_task, task_id, include_running)

    @_translated
    async def release_tasks(self, task_ids: Sequence[str], worker_id: str) -> list[str]:
        """Put claimed tasks that never started back to new."""
        rows = await self.pool.fetch(queries.release_tasks, list(task_ids), worker_id)
        return [row["id"] for row in rows]

    @_translated
    async def count_tasks_by_status(self) -> dict[str, int]:
        """Return the number of tasks in each status."""
        rows = await self.pool.fetch(queries.count_tasks_by_status)
        return {row["status"]: row["count"] for row in rows}

    # Outbox

    @_translated
    async def claim_outbox(self, connection: Connection, limit: int) -> list[Record]:
        """Lock unsent messages inside the caller's transaction."""
        return await connection.fetch(queries.claim_outbox, limit)

    @_translated
    async def mark_outbox_sent(self, connection: Connection, ids: Sequence[int]) -> None:
        """Mark published messages inside the caller's transaction."""
        await connection.execute(queries.mark_outbox_sent, list(ids))

    @_translated
    async def count_unsent_outbox(self) -> int:
        """Return the number of messages waiting for the relay."""
        return await self.pool.fetchval(queries.count_unsent_outbox)

    # Metrics samples

    @_translated
    async def sample_due_tasks(self) -> list[Record]:
        """Return (function_name, due, oldest_age_s) per registered function and per function with due tasks."""
        return await self.pool.fetch(queries.sample_due_tasks)

    @_translated
    async def sample_outbox(self) -> Record:
        """Return (unsent, oldest_age_s) of the unpublished outbox messages."""
        row = await self.pool.fetchrow(queries.sample_outbox)
        assert row is not None
        return row

    # Functions

    @_translated
    async def upsert_function(self, definition: dict[str, Any]) -> bool:
        """Create or update a function; return whether anything changed."""
        changed = await self.pool.fetchval(
            queries.upsert_function,
            definition["name"],
            definition.get("description"),
            definition["entry_point"],
            definition["runtime"],
            definition["code_zip"],
            definition["code_digest"],
            definition["time_limit_s"],
            definition["memory_limit_mb"],
            orjson.dumps(definition.get("environment_variables", {})).decode(),
            orjson.dumps(definition.get("execution_options", {})).decode(),
            orjson.dumps(definition.get("retry_policy", {"enabled": False, "errorsToRetry": []})).decode(),
            definition.get("concurrency_limit"),
        )
        return changed is not None

    @_translated
    async def list_function_settings(self) -> list[Record]:
        """Return every function's settings without its code."""
        return await self.pool.fetch(queries.list_function_settings)

    @_translated
    async def get_function_code(self, name: str, digest: str) -> bytes | None:
        """Return a function's zip archive if its digest still matches."""
        return await self.pool.fetchval(queries.get_function_code, name, digest)

    @_translated
    async def set_function_environment_variable(self, name: str, variable: str, value: str) -> bool:
        """Set one environment variable of a function; return whether the function exists."""
        return await self.pool.fetchval(queries.set_function_environment_variable, name, variable, value) is not None

    # Dispatchers

    @_translated
    async def get_dispatcher_id_by_name(self, name: str) -> str | None:
        """Return the id of the dispatcher with this name."""
        return await self.pool.fetchval(queries.get_dispatcher_id_by_name, name)

    @_translated
    async def list_task_actions(self) -> list[Record]:
        """Return every task action with its dispatcher's event type."""
        return await self.pool.fetch(queries.list_task_actions)
