"""The metrics sampler: due tasks, the age of the oldest due task and the outbox backlog.

These values live in the database, not in any one process, so a loop reads them every
metrics_sample_interval_s and sets the gauges. The sweeper and scheduler roles run it;
with several replicas each reports the same values, and dashboards take the max.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from taskservice import metrics
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.store.db import PostgresError
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)


class MetricsSampler:
    """Sets the database-derived gauges until stopped."""

    def __init__(self, settings: Settings, repository: Repository) -> None:
        self._settings = settings
        self._repository = repository
        self._functions: set[str] = set()
        self._failing = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Sample every metrics_sample_interval_s until stopping is set."""
        logger.info("metrics sampler started", extra={"event": "metrics_sampler_started"})
        while not stopping.is_set():
            await self._sample_logged()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._settings.metrics_sample_interval_s)
        logger.info("metrics sampler stopped", extra={"event": "metrics_sampler_stopped"})

    async def sample_once(self) -> None:
        """Read the due tasks and the outbox backlog and set the gauges."""
        due_rows = await self._repository.sample_due_tasks()
        outbox = await self._repository.sample_outbox()

        functions: set[str] = set()
        for row in due_rows:
            function = row["function_name"]
            functions.add(function)
            metrics.TASKS_DUE.labels(function=function).set(row["due"])
            metrics.OLDEST_DUE_TASK_AGE_SECONDS.labels(function=function).set(row["oldest_age_s"])
        # A deleted function with no due task left stops being reported.
        for function in self._functions - functions:
            metrics.TASKS_DUE.remove(function)
            metrics.OLDEST_DUE_TASK_AGE_SECONDS.remove(function)
        self._functions = functions

        metrics.OUTBOX_UNSENT.set(outbox["unsent"])
        metrics.OUTBOX_OLDEST_UNSENT_AGE_SECONDS.set(outbox["oldest_age_s"])

    async def _sample_logged(self) -> None:
        # A failed sample leaves the gauges at their last values and never stops the
        # service. An outage is logged when it starts and when it ends, not at every sample.
        try:
            await self.sample_once()
        except (DatabaseUnavailableError, PostgresError) as exc:
            if not self._failing:
                logger.info("metrics sample failed, retrying every %.0f s: %s",
                            self._settings.metrics_sample_interval_s, exc,
                            extra={"event": "metrics_sample_failed"})
            self._failing = True
            return
        if self._failing:
            logger.info("metrics sample succeeded again", extra={"event": "metrics_sample_recovered"})
            self._failing = False
