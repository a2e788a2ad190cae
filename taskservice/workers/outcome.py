"""Turning runtime outcomes into finish_tasks rows, with the retry decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from taskservice.functions import TaskOutcome
from taskservice.ids import new_object_id
from taskservice.workers.retry import RetryPolicy

CANCELED_ERROR_NAME = "TaskCanceled"


def finish_row(
    outcome: TaskOutcome, attempt: int, policy: RetryPolicy | None, *, task_failed_events: bool
) -> dict[str, Any]:
    """Build the finish_tasks input for one run: complete, retried (with its retry task) or failed."""
    row: dict[str, Any] = {
        "id": outcome.task_id,
        "attempt": attempt,
        "status": "complete",
        "result": outcome.result if outcome.ok else None,
        "error": outcome.error,
        "started_timestamp": outcome.started_at.isoformat(),
        "finished_timestamp": outcome.finished_at.isoformat(),
        "logs": [[at.isoformat(), line] for at, line in outcome.logs],
        "retry_id": None,
        "retry_start_timestamp": None,
        "failed_event_id": None,
    }
    if outcome.ok:
        return row
    error_name = (outcome.error or {}).get("name")
    delay_s = None
    if policy is not None and error_name != CANCELED_ERROR_NAME:
        delay_s = policy.retry_delay_s(error_name, attempt)
    if delay_s is None:
        row["status"] = "failed"
        if task_failed_events:
            row["failed_event_id"] = new_object_id()
        return row
    row["status"] = "retried"
    row["retry_id"] = new_object_id()
    row["retry_start_timestamp"] = (outcome.finished_at + timedelta(seconds=delay_s)).isoformat()
    return row


def zombie_outcome(task_id: str, started_at: datetime | None) -> TaskOutcome:
    """Build the outcome of a run whose worker stopped renewing its lease."""
    now = datetime.now(UTC)
    return TaskOutcome(
        task_id=task_id,
        ok=False,
        result=None,
        error={"type": "runtime", "name": "zombieTaskCleaned",
               "message": "The worker running this task stopped renewing its lease"},
        logs=[],
        started_at=started_at or now,
        finished_at=now,
    )
