"""The lease sweep: fails in-progress tasks whose worker stopped renewing their lease."""

from __future__ import annotations

import asyncio
import logging

from taskservice import metrics
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)


class LeaseSweeper:
    """Runs fail_expired_leases every sweep_interval_s; several replicas may run it at once."""

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
        """Fail every task whose lease expired; return how many."""
        failed = await self._repository.fail_expired_leases(self._settings.results_topic)
        for row in failed:
            metrics.ZOMBIE_TASKS_RECOVERED.labels(function=row["function_name"]).inc()
            metrics.TASK_STATUS_TRANSITIONS.labels(function=row["function_name"], status="failed").inc()
            logger.warning("task failed after its lease expired", extra={
                "event": "zombie_task_cleaned", "task_id": row["id"], "function": row["function_name"]})
        return len(failed)
