"""Repository of the recovery tools: one method per query in `queries/recovery.py`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from taskservice.store import queries
from taskservice.store.db import Pool, Record
from taskservice.store.repository import _translated, encode_json_rows


class RecoveryRepository:
    """Runs the redrive and dead-letter replay queries on a pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @_translated
    async def list_redrive_candidates(
        self, function_name: str | None, error_name: str | None, since: datetime | None, until: datetime | None,
        limit: int,
    ) -> list[Record]:
        """Return the failed tasks a redrive with these filters would select, oldest failure first."""
        return await self.pool.fetch(queries.list_redrive_candidates, function_name, error_name, since, until, limit)

    @_translated
    async def redrive_failed_tasks(
        self, function_name: str | None, error_name: str | None, since: datetime | None, until: datetime | None,
        new_ids: Sequence[str],
    ) -> list[Record]:
        """Create one new task per selected failed task, at most len(new_ids); return (failed, new) pairs."""
        if not new_ids:
            return []
        return await self.pool.fetch(queries.redrive_failed_tasks, function_name, error_name, since, until,
                                     list(new_ids))

    @_translated
    async def get_function_enabled(self, name: str) -> bool | None:
        """Return whether a function is enabled, or None when it does not exist."""
        return await self.pool.fetchval(queries.get_function_enabled, name)

    @_translated
    async def list_existing_idempotency_keys(self, keys: Sequence[str]) -> set[str]:
        """Return the keys among these that a task already has."""
        if not keys:
            return set()
        rows = await self.pool.fetch(queries.list_existing_idempotency_keys, list(keys))
        return {row["idempotency_key"] for row in rows}

    @_translated
    async def list_dead_letter_replays(self, sources: Sequence[dict[str, Any]]) -> dict[tuple[str, int, int], Record]:
        """Return earlier replays of these source records, by (topic, partition, offset)."""
        if not sources:
            return {}
        rows = await self.pool.fetch(queries.list_dead_letter_replays, encode_json_rows(sources))
        return {(row["source_topic"], row["source_partition"], row["source_offset"]): row for row in rows}

    @_translated
    async def record_dead_letter_replays(self, replays: Sequence[dict[str, Any]]) -> None:
        """Store that these source records were published again, with the dead letter and the new position."""
        if replays:
            await self.pool.execute(queries.record_dead_letter_replays, encode_json_rows(replays))
