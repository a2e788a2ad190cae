"""The lease sweep: recovers in-progress tasks whose worker stopped renewing their lease.

Each recovered run counts as a failed attempt with the error name `zombieTaskCleaned`.
It goes through the same finish path as any failed run, so the function's retry policy
decides between a retry and a final failure. A result message is queued either way.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from taskservice import metrics
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.store.db import translate_errors
from taskservice.store.repository import Repository
from taskservice.workers.outcome import finish_row, zombie_outcome
from taskservice.workers.retry import RetryPolicy

logger = logging.getLogger(__name__)

SWEEP_BATCH_SIZE = 1000


class LeaseSweeper:
    """Runs sweep_once every sweep_interval_s; several replicas may run it at once."""

    def __init__(self, settings: Settings, repository: Repository, health: Health) -> None:
        self._settings = settings
        self._repository = repository
        self._health = health

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until stopping is set."""
        while not stopping.is_set():
            try:
                await self.sweep_once()
            except DatabaseUnavailableError as exc:
                logger.warning("lease sweep failed: %s", exc, extra={"event": "sweep_failed"})
            self._health.mark_progress("sweeper")
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self._settings.sweep_interval_s)
            except asyncio.TimeoutError:
                pass

    async def sweep_once(self) -> int:
        """Finish every task whose lease expired as a zombieTaskCleaned failure; return how many."""
        failed_events = bool(self._settings.task_failed_events_topic)
        async with translate_errors("sweep"), self._repository.pool.acquire() as connection:
            async with connection.transaction():
                expired = await self._repository.lock_expired_leases(connection, SWEEP_BATCH_SIZE)
                if not expired:
                    return 0
                rows = [
                    finish_row(zombie_outcome(row["id"], row["started_timestamp"]), row["attempt"],
                               RetryPolicy.from_json(orjson.loads(row["retry_policy"] or "{}")),
                               task_failed_events=failed_events)
                    for row in expired
                ]
                finished = await self._repository.finish_tasks(
                    rows, self._settings.results_topic, self._settings.task_failed_events_topic, connection
                )
        for row in finished:
            metrics.ZOMBIE_TASKS_RECOVERED.labels(function=row["function_name"]).inc()
            metrics.TASK_STATUS_TRANSITIONS.labels(function=row["function_name"], status=row["status"]).inc()
            if row["status"] == "retried":
                metrics.TASK_RETRIES.labels(function=row["function_name"]).inc()
                metrics.TASKS_CREATED.labels(source="retry", function=row["function_name"]).inc()
            logger.warning("task recovered after its lease expired; now %s", row["status"], extra={
                "event": "zombie_task_cleaned", "task_id": row["id"], "function": row["function_name"],
                "attempt": row["attempt"]})
        return len(finished)
