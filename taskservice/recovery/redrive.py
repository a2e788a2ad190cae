"""Redrive: re-run failed tasks in bulk as new tasks, at most once per failed task.

Only tasks in status `failed` are redriven; `retried` tasks already have a follow-up
and `canceled` ones were stopped on purpose. Each failed task gets one new task with the
same function, data, tags and priority, created by one INSERT … SELECT per batch with the
idempotency key `redrive:<failed task id>`, so a second redrive of the same task, from
any caller, creates nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskservice import metrics
from taskservice.errors import NotFoundError, ServiceError
from taskservice.ids import new_object_id
from taskservice.recovery.filters import InvalidFilterError, format_time
from taskservice.store.recovery_repository import RecoveryRepository

logger = logging.getLogger(__name__)

REDRIVE_BATCH_SIZE = 500
MAX_ERROR_NAME_LENGTH = 256


class FunctionDisabledError(ServiceError):
    """Raised when a redrive names a disabled function, whose new tasks could not run."""


@dataclass(frozen=True, slots=True)
class RedriveSelection:
    """Filters on failed tasks; None accepts any value. since is inclusive, until exclusive."""

    function_name: str | None = None
    error_name: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def arguments(self) -> tuple[str | None, str | None, datetime | None, datetime | None]:
        """Return the filters in the order the redrive queries take them."""
        return self.function_name, self.error_name, self.since, self.until


@dataclass(frozen=True, slots=True)
class RedrivenTask:
    """A failed task and the task that re-runs it (None in a dry run)."""

    failed_task_id: str
    task_id: str | None
    function_name: str
    error_name: str | None
    failed_timestamp: datetime

    def as_json(self) -> dict[str, Any]:
        """Return the camelCase form used by the HTTP API and `--json`."""
        return {
            "failedTaskId": self.failed_task_id,
            "taskId": self.task_id,
            "functionName": self.function_name,
            "errorName": self.error_name,
            "failedTimestamp": format_time(self.failed_timestamp),
        }


def check_error_name(error_name: str | None) -> str | None:
    """Return the error name when it is None or 1 to 256 characters; raise InvalidFilterError otherwise."""
    if error_name is None:
        return None
    if not error_name.strip() or len(error_name) > MAX_ERROR_NAME_LENGTH:
        raise InvalidFilterError(
            f"error name {error_name[:40]!r} must have 1 to {MAX_ERROR_NAME_LENGTH} characters and not be blank, "
            "e.g. Runtime.Timeout or zombieTaskCleaned"
        )
    return error_name


async def check_function(repository: RecoveryRepository, function_name: str | None) -> None:
    """Raise NotFoundError for an unknown function and FunctionDisabledError for a disabled one."""
    if function_name is None:
        return
    enabled = await repository.get_function_enabled(function_name)
    if enabled is None:
        raise NotFoundError(
            f"no function named {function_name!r}; check the name, or register it with `taskservice functions sync`"
        )
    if not enabled:
        raise FunctionDisabledError(f"function {function_name!r} is disabled; enable it before redriving its tasks")


async def redrive_failed_tasks(
    repository: RecoveryRepository, selection: RedriveSelection, limit: int, *, dry_run: bool = False,
    batch_size: int = REDRIVE_BATCH_SIZE, requested_by: str | None = None,
) -> list[RedrivenTask]:
    """Redrive up to limit failed tasks that match, oldest failure first; return them in that order.

    A dry run returns the tasks a redrive would select and changes nothing. requested_by
    (a user id, or "cli") goes into the log line.
    """
    await check_function(repository, selection.function_name)
    if dry_run:
        rows = await repository.list_redrive_candidates(*selection.arguments(), limit)
        return [_redriven(row, task_id=None) for row in rows]

    redriven: list[RedrivenTask] = []
    while len(redriven) < limit:
        size = min(batch_size, limit - len(redriven))
        rows = await repository.redrive_failed_tasks(*selection.arguments(), [new_object_id() for _ in range(size)])
        redriven.extend(_redriven(row, task_id=row["task_id"]) for row in rows)
        # A short batch means no more tasks match, or a concurrent redrive took some.
        if len(rows) < size:
            break
    for task in redriven:
        metrics.TASKS_CREATED.labels(source="redrive", function=task.function_name).inc()
        metrics.TASKS_REDRIVEN.labels(function=task.function_name).inc()
    logger.info("redrove %d failed tasks", len(redriven), extra={
        "event": "tasks_redriven", "count": len(redriven), "function": selection.function_name,
        "error_name": selection.error_name, "requested_by": requested_by})
    return redriven


def _redriven(row: Any, task_id: str | None) -> RedrivenTask:
    return RedrivenTask(
        failed_task_id=row["failed_task_id"],
        task_id=task_id,
        function_name=row["function_name"],
        error_name=row["error_name"],
        failed_timestamp=row["failed_timestamp"],
    )
