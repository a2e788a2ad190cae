"""The scheduler role: creates one task per schedule fire time, from any number of replicas.

No replica leads. Each pass locks the due schedules with SKIP LOCKED, inserts their
tasks through the idempotent task insert and moves each schedule's next_timestamp with
a compare-and-set, all in one transaction. A replica that stalls mid-pass loses its
session after a few seconds (see ScheduleRepository), and its work rolls back. A
replica acting on a stale row changes nothing. Finally, the task table's unique
idempotency key turns any remaining second insert of a fire time into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskservice import metrics
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.scheduler.cron import InvalidScheduleError
from taskservice.scheduler.definition import schedule_idempotency_key, task_rows_for_fires
from taskservice.scheduler.timing import FirePlan, ScheduleTiming, format_fire_time, plan_fires, to_utc
from taskservice.store.db import Record
from taskservice.store.repository import Repository
from taskservice.store.schedule_repository import ScheduleRepository

logger = logging.getLogger(__name__)

# Wait before the next pass when a due schedule is locked by another replica, or when the
# database failed.
BUSY_RETRY_S = 0.2
DATABASE_RETRY_S = 1.0


def utc_now() -> datetime:
    """Return the current time in UTC; the scheduler's default clock."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fire:
    """One fire time handled by a pass; task_id is None when a task for it already existed."""

    schedule_id: str
    fire_time: datetime
    task_id: str | None


class _ScheduleChanged(Exception):
    """Raised inside a pass to roll it back when a locked schedule did not take its update."""


class Scheduler:
    """Fires due schedules in passes; run() loops until stopped, fire_due() does one pass."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        schedules: ScheduleRepository,
        health: Health,
        changed: asyncio.Event | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._schedules = schedules
        self._health = health
        self._changed = changed or asyncio.Event()
        self._now = now
        # Process identity for logs only; correctness never depends on it.
        self.scheduler_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    async def run(self, stopping: asyncio.Event) -> None:
        """Fire due schedules until stopping is set, sleeping until the next fire time."""
        logger.info("scheduler started", extra={"event": "scheduler_started", "scheduler_id": self.scheduler_id})
        try:
            while not stopping.is_set():
                delay_s = await self.run_once()
                self._health.mark_progress("scheduler")
                await self._sleep(stopping, delay_s)
        finally:
            logger.info("scheduler stopped", extra={"event": "scheduler_stopped", "scheduler_id": self.scheduler_id})

    async def run_once(self) -> float:
        """Run one pass; return the seconds to wait before the next one."""
        try:
            await self.fire_due()
            earliest = await self._schedules.next_schedule_timestamp()
        except DatabaseUnavailableError as exc:
            logger.warning("scheduler pass failed, retrying: %s", exc,
                           extra={"event": "scheduler_pass_failed", "scheduler_id": self.scheduler_id})
            return min(self._settings.scheduler_tick_s, DATABASE_RETRY_S)
        return self._delay_until(earliest)

    async def fire_due(self) -> list[Fire]:
        """Create the tasks of every schedule due now; return the fire times handled."""
        now = to_utc(self._now())
        fires: list[Fire] = []
        while True:
            try:
                claimed, batch = await self._fire_batch(now)
            except _ScheduleChanged as exc:
                logger.warning("scheduler pass rolled back: %s", exc,
                               extra={"event": "scheduler_pass_rolled_back", "scheduler_id": self.scheduler_id})
                break
            fires.extend(batch)
            if claimed < self._settings.scheduler_batch_size:
                break
        return fires

    def _delay_until(self, earliest: datetime | None) -> float:
        tick_s = self._settings.scheduler_tick_s
        if earliest is None:
            return tick_s
        seconds = (earliest - to_utc(self._now())).total_seconds()
        if seconds <= 0:
            return BUSY_RETRY_S
        return min(tick_s, seconds)

    async def _sleep(self, stopping: asyncio.Event, delay_s: float) -> None:
        stop_waiter = asyncio.create_task(stopping.wait(), name="scheduler-stop-waiter")
        change_waiter = asyncio.create_task(self._changed.wait(), name="scheduler-change-waiter")
        try:
            await asyncio.wait({stop_waiter, change_waiter}, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            change_waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(stop_waiter, change_waiter, return_exceptions=True)
        self._changed.clear()

    async def _fire_batch(self, now: datetime) -> tuple[int, list[Fire]]:
        """Fire one batch of due schedules in one transaction; return (schedules claimed, fires)."""
        async with self._schedules.transaction() as connection:
            rows = await self._schedules.claim_due_schedules(connection, now, self._settings.scheduler_batch_size)
            plans = [(row, self._plan(row, now)) for row in rows]
            task_rows = [task for row, plan in plans if plan is not None
                         for task in task_rows_for_fires(row, plan.fire_times)]
            created = await self._repository.insert_tasks(task_rows, connection)
            created_ids = {record["idempotency_key"]: record["id"] for record in created}
            fires = [
                Fire(row["id"], fire_time, created_ids.get(schedule_idempotency_key(row["id"], fire_time)))
                for row, plan in plans if plan is not None for fire_time in plan.fire_times
            ]
            task_ids = {(fire.schedule_id, fire.fire_time): fire.task_id for fire in fires}
            updates = [self._update(row, plan, task_ids) for row, plan in plans]
            changed = await self._schedules.advance_schedules(connection, updates)
            if len(changed) != len(updates):
                missing = sorted({update["id"] for update in updates} - set(changed))
                raise _ScheduleChanged(f"schedules {', '.join(missing)} changed while locked")
        self._report(plans, fires)
        return len(rows), fires

    def _plan(self, row: Record, now: datetime) -> FirePlan | None:
        """Return the schedule's plan, or None when its definition is invalid and it must pause."""
        try:
            timing = ScheduleTiming.from_schedule(row)
            plan = plan_fires(timing, row["next_timestamp"], now, row["catch_up"], row["catch_up_max"],
                              self._settings.scheduler_misfire_grace_s)
        except InvalidScheduleError as exc:
            logger.error("schedule %s is invalid; pausing it: %s", row["id"], exc,
                         extra={"event": "schedule_invalid", "schedule_id": row["id"]})
            return None
        if plan.next_timestamp is None:
            logger.error("schedule %s has no further fire time; pausing it", row["id"],
                         extra={"event": "schedule_exhausted", "schedule_id": row["id"]})
        return plan

    @staticmethod
    def _update(row: Record, plan: FirePlan | None,
                task_ids: dict[tuple[str, datetime], str | None]) -> dict[str, Any]:
        """Return the advance_schedules row: the next fire time, or a pause for an unusable schedule."""
        old = row["next_timestamp"].isoformat()
        last = plan.fire_times[-1] if plan is not None and plan.fire_times else None
        pause = plan is None or plan.next_timestamp is None
        return {
            "id": row["id"],
            "old_next_timestamp": old,
            "next_timestamp": old if pause else plan.next_timestamp.isoformat(),  # type: ignore[union-attr]
            "pause": pause,
            "last_fire_timestamp": last.isoformat() if last else None,
            "last_task_id": task_ids.get((row["id"], last)) if last else None,
        }

    def _report(self, plans: Sequence[tuple[Record, FirePlan | None]], fires: Sequence[Fire]) -> None:
        functions = {row["id"]: row["function_name"] for row, _plan in plans}
        for fire in fires:
            fields = {"schedule_id": fire.schedule_id, "fire_time": format_fire_time(fire.fire_time),
                      "function": functions[fire.schedule_id], "scheduler_id": self.scheduler_id}
            if fire.task_id is None:
                metrics.SCHEDULE_FIRES.labels(outcome="duplicate").inc()
                metrics.TASKS_DEDUPLICATED.inc()
                logger.info("schedule fire time already had a task",
                            extra={"event": "schedule_fire_duplicate", **fields})
            else:
                metrics.SCHEDULE_FIRES.labels(outcome="created").inc()
                metrics.TASKS_CREATED.labels(source="schedule", function=fields["function"]).inc()
                logger.info("schedule fired", extra={"event": "schedule_fired", "task_id": fire.task_id, **fields})
        for row, plan in plans:
            if plan is not None and plan.missed:
                metrics.SCHEDULE_FIRES_MISSED.labels(policy=row["catch_up"]).inc(plan.missed)
                logger.warning(
                    "schedule %s missed %d fire time(s); catch-up policy %s ran %d of the due ones",
                    row["id"], plan.missed, row["catch_up"], len(plan.fire_times),
                    extra={"event": "schedule_fires_missed", "schedule_id": row["id"], "missed": plan.missed,
                           "catch_up": row["catch_up"], "scheduler_id": self.scheduler_id},
                )
