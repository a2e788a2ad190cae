"""Repository of schedules: one method per query in `queries/schedules.py`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from taskservice.errors import DatabaseUnavailableError
from taskservice.store import queries
from taskservice.store.db import Connection, Pool, PostgresError, Record, translate_errors
from taskservice.store.repository import _translated, encode_json_rows

# Maximum time a scheduler transaction may sit idle before the server ends its session.
# A pass holds its locks for milliseconds, so only a stopped or hung process reaches it.
SCHEDULE_TRANSACTION_IDLE_TIMEOUT_MS = 5_000
IDLE_IN_TRANSACTION_TIMEOUT_SQLSTATE = "25P03"


class ScheduleRepository:
    """Runs the schedule queries on a pool, or on the connection of a scheduler transaction."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """Yield a connection in a transaction whose idle time is bounded; it commits when the block ends.

        Connection failures, the commit's included, raise DatabaseUnavailableError.
        """
        try:
            async with translate_errors("schedule_transaction"):
                async with self.pool.acquire() as connection, connection.transaction():
                    await self.limit_schedule_transaction(connection)
                    yield connection
        except PostgresError as exc:
            if getattr(exc, "sqlstate", None) != IDLE_IN_TRANSACTION_TIMEOUT_SQLSTATE:
                raise
            # The server ended the session, and rolled the transaction back.
            raise DatabaseUnavailableError(f"scheduler transaction ended by the server: {exc}") from exc

    @_translated
    async def limit_schedule_transaction(self, connection: Connection) -> None:
        """Bound the idle time of the caller's transaction."""
        await connection.execute(queries.limit_schedule_transaction, str(SCHEDULE_TRANSACTION_IDLE_TIMEOUT_MS))

    @_translated
    async def insert_schedule(self, schedule: dict[str, Any], connection: Connection | None = None) -> Record:
        """Insert a validated schedule row (see taskservice.scheduler.definition); return it."""
        executor = connection or self.pool
        return await executor.fetchrow(
            queries.insert_schedule,
            schedule["id"],
            schedule["function_name"],
            schedule.get("interval_s"),
            schedule.get("cron_expression"),
            schedule["time_zone"],
            encode_json_rows(schedule["data"]),
            list(schedule["tags"]),
            schedule.get("priority"),
            schedule["start_timestamp"],
            schedule["next_timestamp"],
            schedule["catch_up"],
            schedule["catch_up_max"],
            schedule.get("created_by_user_id"),
            schedule.get("created_by_application_id"),
        )

    @_translated
    async def get_schedule(self, schedule_id: str) -> Record | None:
        """Return one schedule, or None."""
        return await self.pool.fetchrow(queries.get_schedule, schedule_id)

    @_translated
    async def list_schedules(self, limit: int = 1000, offset: int = 0) -> list[Record]:
        """Return schedules in creation order."""
        return await self.pool.fetch(queries.list_schedules, limit, offset)

    @_translated
    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; return whether it existed. Tasks it created stay."""
        return await self.pool.fetchval(queries.delete_schedule, schedule_id) is not None

    @_translated
    async def pause_schedule(self, schedule_id: str) -> bool:
        """Pause an active schedule; return False when it is unknown or already paused."""
        return await self.pool.fetchval(queries.pause_schedule, schedule_id) is not None

    @_translated
    async def resume_schedule(self, schedule_id: str) -> bool:
        """Resume a paused schedule; return False when it is unknown or not paused."""
        return await self.pool.fetchval(queries.resume_schedule, schedule_id) is not None

    @_translated
    async def claim_due_schedules(self, connection: Connection, now: datetime, limit: int) -> list[Record]:
        """Lock up to limit schedules due at now inside the caller's transaction, earliest first."""
        return await connection.fetch(queries.claim_due_schedules, now, limit)

    @_translated
    async def advance_schedules(self, connection: Connection, updates: Sequence[dict[str, Any]]) -> list[str]:
        """Set new next fire times inside the caller's transaction; return the ids changed.

        Each update has id, old_next_timestamp, next_timestamp, pause, last_fire_timestamp
        and last_task_id; timestamps as ISO-8601 strings.
        """
        if not updates:
            return []
        rows = await connection.fetch(queries.advance_schedules, encode_json_rows(updates))
        return [row["id"] for row in rows]

    @_translated
    async def next_schedule_timestamp(self) -> datetime | None:
        """Return the earliest next fire time among active schedules."""
        return await self.pool.fetchval(queries.next_schedule_timestamp)
