"""The worker: claims due tasks in batches, runs them in the runtime, stores the outcomes.

One loop claims up to `worker_claim_batch_size` due tasks at a time (priority first, then
start time), groups them by function and hands each group to the runtime pool in one
call. Each finished group is stored with one statement that also queues the result
messages, so a result exists on the outbox exactly when its task is final. The loop sleeps
until a `taskservice_tasks` notification, the next delayed task's start time, or the poll
interval, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson

from taskservice import metrics
from taskservice.aio import wait_first
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.functions import RuntimePool, TaskOutcome
from taskservice.health import Health
from taskservice.store.db import PostgresError, Record, retry_until_done
from taskservice.store.repository import Repository
from taskservice.workers.catalog import FunctionCatalog, FunctionEntry
from taskservice.workers.outcome import finish_row

logger = logging.getLogger(__name__)

# Runtime processes started ahead of demand when a worker starts, one per function.
PRESTART_MAX_FUNCTIONS = 50


def new_worker_id() -> str:
    """Return an id unique to this process start, so a restarted pod never reuses one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_wire_form(row: Record) -> dict[str, Any]:
    """Build the task object a handler receives, in the API's camelCase form."""
    task = {
        "id": row["id"],
        "functionName": row["function_name"],
        "status": "inProgress",
        "data": orjson.loads(row["data"]),
        "tags": list(row["tags"]),
        "priority": row["priority"],
        "startTimestamp": _iso(row["start_timestamp"]),
        "creationTimestamp": _iso(row["creation_timestamp"]),
        "statusChangedTimestamp": _iso(row["status_changed_timestamp"]),
        "attempt": row["attempt"],
    }
    for column, key in (("created_by_user_id", "createdByUserId"), ("created_by_application_id", "createdByApplicationId")):
        if row[column] is not None:
            task[key] = row[column]
    return task


def _unavailable_outcome(row: Record, name: str, message: str) -> TaskOutcome:
    now = datetime.now(UTC)
    return TaskOutcome(
        task_id=row["id"], ok=False, result=None,
        error={"type": "invocation", "name": name, "message": message},
        logs=[], started_at=now, finished_at=now,
    )


class Worker:
    """Claims and runs tasks until stopped; several workers share the queue safely."""

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        runtime: RuntimePool,
        catalog: FunctionCatalog,
        health: Health,
        wake: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._runtime = runtime
        self._catalog = catalog
        self._health = health
        self._wake = wake
        self.worker_id = new_worker_id()
        self._running: dict[str, int] = {}          # task id -> attempt
        self._cancel_sent: set[str] = set()
        self._cancel_pending: set[str] = set()
        self._groups: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    def request_cancel(self, task_id: str) -> None:
        """Interrupt a task this worker runs, after a cancel request for it."""
        if task_id not in self._running or task_id in self._cancel_sent:
            return
        # The runtime does not know a task until its batch reaches run_batch, so a cancel
        # that comes earlier waits in _cancel_pending for _execute to pass it on.
        if self._runtime.cancel(task_id, self._settings.cancel_grace_s):
            self._cancel_pending.discard(task_id)
            self._cancel_sent.add(task_id)
            logger.info("cancelling running task", extra={"event": "task_cancel_requested", "task_id": task_id,
                                                          "worker_id": self.worker_id})
        else:
            self._cancel_pending.add(task_id)

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and run tasks until stopping is set, then let running tasks finish."""
        logger.info("worker started", extra={"event": "worker_started", "worker_id": self.worker_id})
        self._report_slots()
        heartbeat = asyncio.create_task(self._renew_leases(stopping), name="worker-heartbeat")
        warm_up = asyncio.create_task(self._prestart_runtimes(), name="worker-warm-up")
        try:
            while not stopping.is_set():
                claimed = await self._claim_once(stopping)
                self._health.mark_progress("worker")
                if claimed < self._settings.worker_claim_batch_size:
                    await self._sleep(stopping)
        finally:
            warm_up.cancel()
            await self._drain()
            heartbeat.cancel()
            logger.info("worker stopped", extra={"event": "worker_stopped", "worker_id": self.worker_id})

    async def _prestart_runtimes(self) -> None:
        """Start one runtime process per function, so the first tasks do not wait for one."""
        try:
            specs = await self._catalog.runnable_specs()
        except DatabaseUnavailableError:
            return
        for spec in specs[:PRESTART_MAX_FUNCTIONS]:
            try:
                await self._runtime.prestart(spec)
            except Exception:  # noqa: BLE001 - a slow first batch is the only cost
                logger.warning("cannot prestart the runtime of %s", spec.name, exc_info=True,
                               extra={"event": "prestart_failed", "function": spec.name})

    async def _claim_once(self, stopping: asyncio.Event) -> int:
        free = self._settings.worker_max_in_flight - len(self._running)
        if free <= 0:
            self._slot_freed.clear()
            await wait_first(self._slot_freed, stopping, timeout=self._settings.worker_poll_interval_s)
            return self._settings.worker_claim_batch_size
        self._wake.clear()
        limit = min(free, self._settings.worker_claim_batch_size)
        try:
            rows = await self._repository.claim_tasks(
                limit, self.worker_id, self._settings.lease_s, self._settings.max_running_tasks
            )
        except (DatabaseUnavailableError, PostgresError) as exc:
            # Outages and unexpected server errors alike are waited out, never fatal.
            logger.warning("cannot claim tasks: %s", exc, extra={"event": "claim_failed", "worker_id": self.worker_id})
            await asyncio.sleep(self._settings.worker_poll_interval_s)
            return 0
        if rows:
            self._start_groups(rows)
        return len(rows)

    def _start_groups(self, rows: list[Record]) -> None:
        now = datetime.now(UTC)
        by_function: dict[str, list[Record]] = defaultdict(list)
        for row in rows:
            by_function[row["function_name"]].append(row)
            self._running[row["id"]] = row["attempt"]
            metrics.TASK_QUEUE_WAIT_SECONDS.labels(function=row["function_name"]).observe(
                max((now - row["start_timestamp"]).total_seconds(), 0.0)
            )
            logger.debug("task claimed", extra={
                "event": "task_claimed", "task_id": row["id"], "function": row["function_name"],
                "attempt": row["attempt"], "event_id": row["event_id"], "worker_id": self.worker_id})
        self._report_slots()
        for function_name, group in by_function.items():
            metrics.TASK_STATUS_TRANSITIONS.labels(function=function_name, status="inProgress").inc(len(group))
            task = asyncio.create_task(self._run_group(function_name, group), name=f"run-{function_name}")
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _run_group(self, function_name: str, rows: list[Record]) -> None:
        try:
            entry = await retry_until_done("load_function", lambda: self._catalog.get(function_name))
            outcomes = await self._execute(function_name, entry, rows)
            policy = entry.retry_policy if entry is not None else None
            failed_events = bool(self._settings.task_failed_events_topic)
            attempts = {row["id"]: row["attempt"] for row in rows}
            finished = [finish_row(outcome, attempts[outcome.task_id], policy, task_failed_events=failed_events)
                        for outcome in outcomes]
            # The outcome must be stored even while the worker shuts down.
            stored = await asyncio.shield(self._store(finished))
            self._observe(function_name, outcomes, stored)
        except asyncio.CancelledError:
            # Shutdown ran out of grace; _drain puts these tasks back in the queue.
            raise
        except Exception:
            # The leases of these tasks are no longer renewed, so the sweep recovers them.
            logger.exception("running a batch of %s failed", function_name,
                             extra={"event": "batch_failed", "function": function_name, "worker_id": self.worker_id})
            self._forget(rows)
        else:
            self._forget(rows)
        finally:
            self._report_slots()
            self._slot_freed.set()

    def _report_slots(self) -> None:
        metrics.TASKS_RUNNING.set(len(self._running))
        metrics.WORKER_FREE_SLOTS.set(max(self._settings.worker_max_in_flight - len(self._running), 0))

    def _forget(self, rows: list[Record]) -> None:
        for row in rows:
            self._running.pop(row["id"], None)
            self._cancel_sent.discard(row["id"])
            self._cancel_pending.discard(row["id"])

    async def _execute(self, function_name: str, entry: FunctionEntry | None, rows: list[Record]) -> list[TaskOutcome]:
        if entry is None:
            return [_unavailable_outcome(row, "FUNCTION_NOT_FOUND", f"No function named {function_name!r} exists")
                    for row in rows]
        if entry.spec is None:
            return [_unavailable_outcome(row, entry.unavailable_reason or "FUNCTION_DISABLED",
                                         f"Function {function_name!r} is disabled") for row in rows]
        batch = asyncio.ensure_future(self._runtime.run_batch(entry.spec, [task_wire_form(row) for row in rows]))
        await asyncio.sleep(0)  # run_batch registers the batch before its first await
        for row in rows:
            if row["id"] in self._cancel_pending:
                self.request_cancel(row["id"])
        return await batch

    async def _store(self, finished: list[dict[str, Any]]) -> list[Record]:
        return await retry_until_done(
            "finish_tasks",
            lambda: self._repository.finish_tasks(
                finished, self._settings.results_topic, self._settings.task_failed_events_topic
            ),
        )

    def _observe(self, function_name: str, outcomes: list[TaskOutcome], stored: list[Record]) -> None:
        stored_status = {row["id"]: row["status"] for row in stored}
        for outcome in outcomes:
            status = stored_status.get(outcome.task_id, "complete" if outcome.ok else "failed")
            metrics.TASK_DURATION_SECONDS.labels(function=function_name, outcome=status).observe(
                (outcome.finished_at - outcome.started_at).total_seconds()
            )
            if outcome.task_id not in stored_status:
                # The sweep recovered this task after its lease expired, so its stored outcome is kept.
                logger.warning(
                    "task was no longer inProgress for this run; its outcome was discarded",
                    extra={"event": "finish_skipped", "task_id": outcome.task_id, "function": function_name,
                           "attempt": self._running.get(outcome.task_id), "worker_id": self.worker_id},
                )
                continue
            metrics.TASK_STATUS_TRANSITIONS.labels(function=function_name, status=status).inc()
            if status == "retried":
                metrics.TASK_RETRIES.labels(function=function_name).inc()
                metrics.TASKS_CREATED.labels(source="retry", function=function_name).inc()
            if outcome.ok:
                logger.debug("task %s", status, extra={
                    "event": f"task_{status}", "task_id": outcome.task_id, "function": function_name,
                    "attempt": self._running.get(outcome.task_id), "worker_id": self.worker_id})
            else:
                error = outcome.error or {}
                log = logger.error if status == "failed" else logger.info
                log(
                    "task %s: %s: %s", status, error.get("name"), error.get("message"),
                    extra={"event": f"task_{status}", "task_id": outcome.task_id, "function": function_name,
                           "attempt": self._running.get(outcome.task_id), "worker_id": self.worker_id},
                )

    async def _sleep(self, stopping: asyncio.Event) -> None:
        timeout = self._settings.worker_poll_interval_s
        try:
            next_due = await self._repository.next_due_timestamp()
        except DatabaseUnavailableError:
            next_due = None
        if next_due is not None:
            timeout = min(timeout, max((next_due - datetime.now(UTC)).total_seconds(), 0.0))
        await wait_first(self._wake, stopping, timeout=timeout)

    async def _renew_leases(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            if not self._running:
                continue
            try:
                renewed = await self._repository.renew_leases(list(self._running), self.worker_id, self._settings.lease_s)
            except DatabaseUnavailableError as exc:
                logger.warning("cannot renew leases: %s", exc, extra={"event": "lease_renewal_failed",
                                                                     "worker_id": self.worker_id})
                continue
            # A missed cancel notification is caught here, one heartbeat later.
            for row in renewed:
                if row["cancel_requested"]:
                    self.request_cancel(row["id"])

    async def _drain(self) -> None:
        """Let running tasks finish within the grace period, then put the rest back in the queue."""
        if not self._groups:
            return
        logger.info("waiting up to %.0f s for %d running tasks", self._settings.shutdown_grace_s, len(self._running),
                    extra={"event": "worker_draining", "worker_id": self.worker_id})
        started = time.monotonic()
        _done, pending = await asyncio.wait(set(self._groups), timeout=self._settings.shutdown_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        leftover = list(self._running)
        if not leftover:
            return
        # NOTE: a released run counts as not started, so a task longer than the grace
        # period starts again after every shutdown until it gets a full run.
        released = await retry_until_done("release_tasks",
                                          lambda: self._repository.release_tasks(leftover, self.worker_id))
        self._running.clear()
        logger.warning("released %d tasks still running after %.0f s", len(released), time.monotonic() - started,
                       extra={"event": "tasks_released", "worker_id": self.worker_id})
