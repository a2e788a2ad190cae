"""Repository of the HTTP API: one method per `api_*` query in `queries/api.py`.

Each method is named after its query without the `api_` prefix. List methods take a
CompiledQuery from `rql_sql` and fill the query template with its fragments.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from taskservice.errors import AlreadyExistsError
from taskservice.store import queries
from taskservice.store.db import Connection, Pool, Record, UniqueViolationError
from taskservice.store.repository import _translated, encode_json_rows
from taskservice.store.rql_sql import CompiledQuery

# Unique constraints whose violation a caller can cause, and the name each one guards.
_UNIQUE_NAMES = {
    "dispatchers_name_key": "dispatcher name",
    "dispatcher_actions_dispatcher_id_name_key": "action name in this dispatcher",
    "functions_pkey": "function name",
    "users_email_key": "user email",
    "oauth2_clients_client_id_key": "OAuth2 client id",
}


def _already_exists(exc: UniqueViolationError) -> AlreadyExistsError:
    what = _UNIQUE_NAMES.get(getattr(exc, "constraint_name", "") or "", "unique value")
    return AlreadyExistsError(f"the {what} is already taken; choose another")


def _json(value: Any) -> str | None:
    return None if value is None else encode_json_rows(value)


class ApiRepository:
    """Runs the HTTP API's named queries on a pool, or on a connection in a transaction."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """Yield a connection inside a transaction that commits when the block ends."""
        async with self.pool.acquire() as connection, connection.transaction():
            yield connection

    async def _page(self, template: str, count_template: str, compiled: CompiledQuery) -> tuple[int | None, list[Record]]:
        base = len(compiled.parameters)
        sql = template.format(where=compiled.where, order=compiled.order,
                              limit=f"${base + 1}", offset=f"${base + 2}")
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(sql, *compiled.parameters, compiled.limit, compiled.offset)
            total = None
            if not compiled.skip_count:
                total = await connection.fetchval(count_template.format(where=compiled.where),
                                                  *compiled.parameters[:compiled.where_parameters])
        return total, rows

    # Tasks

    @_translated
    async def list_tasks(self, compiled: CompiledQuery) -> tuple[int | None, list[Record]]:
        """Return the total (None with skipCount) and one page of tasks."""
        return await self._page(queries.api_list_tasks, queries.api_count_tasks, compiled)

    @_translated
    async def get_task(self, task_id: str) -> Record | None:
        """Return a task with its result."""
        return await self.pool.fetchrow(queries.api_get_task, task_id)

    @_translated
    async def insert_task(self, task: dict[str, Any]) -> Record | None:
        """Insert an API task; return the row with `enabled`, or None for an unknown function."""
        return await self.pool.fetchrow(
            queries.api_insert_task, task["id"], task["function_name"], encode_json_rows(task["data"]),
            list(task["tags"]), task["priority"], task["start_timestamp"], task["user_id"], task["application_id"],
            task.get("concurrency_key"),
        )

    @_translated
    async def insert_running_task(self, task: dict[str, Any], worker_id: str, lease_s: float) -> Record | None:
        """Insert a direct execution's task as inProgress; same result as insert_task."""
        return await self.pool.fetchrow(
            queries.api_insert_running_task, task["id"], task["function_name"], encode_json_rows(task["data"]),
            task["user_id"], task["application_id"], worker_id, lease_s,
        )

    @_translated
    async def cancel_task(self, task_id: str) -> Record | None:
        """Cancel a new task; return previous and new status, or None for an unknown task."""
        return await self.pool.fetchrow(queries.cancel_task, task_id, False)

    @_translated
    async def get_task_state(self, task_id: str) -> Record | None:
        """Return a task's status and attempt."""
        return await self.pool.fetchrow(queries.api_get_task_state, task_id)

    @_translated
    async def list_task_logs(self, task_id: str, since: datetime | None, limit: int, offset: int) -> list[Record]:
        """Return a task's log lines from since on."""
        return await self.pool.fetch(queries.api_list_task_logs, task_id, since, limit, offset)

    @_translated
    async def list_function_logs(self, name: str, start: datetime, end: datetime, limit: int,
                                 offset: int) -> list[Record]:
        """Return the log lines of a function's tasks between start and end."""
        return await self.pool.fetch(queries.api_list_function_logs, name, start, end, limit, offset)

    # Functions

    @_translated
    async def list_functions(self) -> list[Record]:
        """Return every function's name, description and update time."""
        return await self.pool.fetch(queries.api_list_functions)

    @_translated
    async def get_function(self, name: str) -> Record | None:
        """Return a function's settings without its code."""
        return await self.pool.fetchrow(queries.api_get_function, name)

    @_translated
    async def lock_function(self, connection: Connection, name: str) -> Record | None:
        """Return a function's settings, locked until the caller's transaction ends."""
        return await connection.fetchrow(queries.api_lock_function, name)

    @_translated
    async def get_function_zip(self, connection: Connection, name: str) -> bytes | None:
        """Return a function's zip archive."""
        return await connection.fetchval(queries.api_get_function_zip, name)

    @_translated
    async def insert_function(self, row: dict[str, Any]) -> bool:
        """Insert a function; return False when the name is taken."""
        return await self.pool.fetchval(queries.api_insert_function, *self._function_values(row)) is not None

    @_translated
    async def update_function(self, connection: Connection, row: dict[str, Any]) -> bool:
        """Replace a function's settings (and code when row has code_zip); return whether it exists."""
        return await connection.fetchval(queries.api_update_function, *self._function_values(row)) is not None

    @staticmethod
    def _function_values(row: dict[str, Any]) -> list[Any]:
        return [
            row["name"], row.get("description"), row["entry_point"], row["runtime"], row.get("code_zip"),
            row.get("code_digest"), row["time_limit_s"], row["memory_limit_mb"],
            encode_json_rows(row["environment_variables"]), encode_json_rows(row["execution_options"]),
            encode_json_rows(row["retry_policy"]), row.get("concurrency_limit"),
        ]

    @_translated
    async def delete_function(self, name: str) -> bool:
        """Delete a function (its tasks and logs stay); return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_function, name) is not None

    @_translated
    async def set_function_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable a function; return whether it exists."""
        return await self.pool.fetchval(queries.api_set_function_enabled, name, enabled) is not None

    # Dispatchers

    @_translated
    async def list_dispatchers(self, compiled: CompiledQuery) -> tuple[int | None, list[Record]]:
        """Return the total (None with skipCount) and one page of dispatchers with their actions."""
        return await self._page(queries.api_list_dispatchers, queries.api_count_dispatchers, compiled)

    @_translated
    async def get_dispatcher(self, dispatcher_id: str) -> Record | None:
        """Return a dispatcher with its actions."""
        return await self.pool.fetchrow(queries.api_get_dispatcher, dispatcher_id)

    @_translated
    async def insert_dispatcher(self, dispatcher: dict[str, Any], actions: Sequence[dict[str, Any]]) -> None:
        """Insert a dispatcher and its actions in one transaction."""
        try:
            async with self.transaction() as connection:
                await connection.execute(
                    queries.api_insert_dispatcher, dispatcher["id"], dispatcher.get("name"),
                    dispatcher.get("description"), dispatcher["event_type"], list(dispatcher.get("tags") or []),
                    _json(dispatcher.get("filter")), _json(dispatcher.get("transition")),
                )
                for action in actions:
                    await self.insert_action(dispatcher["id"], action, connection=connection)
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def insert_action(self, dispatcher_id: str, action: dict[str, Any],
                            connection: Connection | None = None) -> None:
        """Insert one action of a dispatcher."""
        executor = connection or self.pool
        try:
            await executor.execute(
                queries.api_insert_action, action["id"], dispatcher_id, action["type"], action.get("name"),
                action.get("description"), action.get("function_name"), encode_json_rows(action.get("data") or {}),
                list(action.get("tags") or []), action.get("start_timestamp"), _json(action.get("recipients")),
                action.get("template_id"), _json(action.get("input")), action.get("include_event"),
                action.get("deduplication_key"), action.get("concurrency_key"), action.get("delay_s"),
                action.get("priority"),
            )
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def update_dispatcher(self, dispatcher_id: str, patch: dict[str, Any]) -> bool:
        """Apply a partial update given as wire field names; return whether the dispatcher exists."""
        try:
            return await self.pool.fetchval(queries.api_update_dispatcher, dispatcher_id,
                                            encode_json_rows(patch)) is not None
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def delete_dispatcher(self, dispatcher_id: str) -> bool:
        """Delete a dispatcher and its actions; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_dispatcher, dispatcher_id) is not None

    @_translated
    async def update_action(self, dispatcher_id: str, action_id: str, patch: dict[str, Any]) -> bool:
        """Apply a partial update of an action; return whether it exists."""
        try:
            return await self.pool.fetchval(queries.api_update_action, dispatcher_id, action_id,
                                            encode_json_rows(patch)) is not None
        except UniqueViolationError as exc:
            raise _already_exists(exc) from exc

    @_translated
    async def delete_action(self, dispatcher_id: str, action_id: str) -> bool:
        """Delete an action; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_action, dispatcher_id, action_id) is not None

    @_translated
    async def get_action_type(self, dispatcher_id: str, action_id: str) -> str | None:
        """Return an action's type, or None when the action does not exist."""
        return await self.pool.fetchval(queries.api_get_action_type, dispatcher_id, action_id)

    # API functions

    @_translated
    async def list_api_requests(self, compiled: CompiledQuery) -> tuple[int | None, list[Record]]:
        """Return the total (None with skipCount) and one page of API requests."""
        return await self._page(queries.api_list_api_requests, queries.api_count_api_requests, compiled)

    @_translated
    async def insert_api_request(self, request: dict[str, Any], logs: Sequence[tuple[datetime, str]]) -> None:
        """Record an API-function call and its log lines."""
        await self.pool.execute(
            queries.api_insert_api_request, request["id"], request["function_name"], request["method"],
            request["path"], request.get("user_id"), request.get("application_id"), request["status_code"],
            request["timestamp"], request["duration"], _json(request.get("error")),
            encode_json_rows([[at.isoformat(), line] for at, line in logs]),
        )

    @_translated
    async def api_request_exists(self, request_id: str) -> bool:
        """Return whether an API request record exists."""
        return bool(await self.pool.fetchval(queries.api_api_request_exists, request_id))

    @_translated
    async def list_api_request_logs(self, request_id: str, since: datetime | None, limit: int,
                                    offset: int) -> list[Record]:
        """Return an API request's log lines from since on."""
        return await self.pool.fetch(queries.api_list_api_request_logs, request_id, since, limit, offset)

    # Schedules

    @_translated
    async def list_schedules(self, compiled: CompiledQuery) -> tuple[int | None, list[Record]]:
        """Return the total (None with skipCount) and one page of schedules."""
        return await self._page(queries.api_list_schedules, queries.api_count_schedules, compiled)

    @_translated
    async def insert_schedule(self, schedule: dict[str, Any]) -> Record | None:
        """Insert an interval schedule; return it, or None for an unknown function."""
        return await self.pool.fetchrow(
            queries.api_insert_schedule, schedule["id"], schedule["function_name"], schedule["interval_s"],
            encode_json_rows(schedule["data"]), schedule["priority"], schedule["start_timestamp"],
            schedule["user_id"], schedule["application_id"],
        )

    @_translated
    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; return whether it existed."""
        return await self.pool.fetchval(queries.api_delete_schedule, schedule_id) is not None


def decode_json_column(value: Any) -> Any:
    """Return a json column's value, decoding text that a `::text` cast produced."""
    if isinstance(value, str):
        return orjson.loads(value)
    return value
