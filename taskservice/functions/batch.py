"""Execution of one batch on worker processes, with time limits, cancellation and crash recovery."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from taskservice.functions.process import WorkerExited, WorkerProcess
from taskservice.functions.protocol import MAX_BATCH_TASKS, ProtocolError, format_log_line, task_id_of
from taskservice.functions.spec import (
    EXIT_ERROR,
    PROTOCOL_ERROR,
    RUNTIME,
    TASK_CANCELED,
    TASK_CANCELED_MESSAGE,
    TIMEOUT,
    FunctionSpec,
    PoolClosedError,
    TaskOutcome,
    make_error,
)

logger = logging.getLogger("taskservice.functions")

_ITEM_FIELDS = 7

# Seconds until the next check when the grace period of a cancelled task ends
# while the worker reports that the task's handler has already ended. The
# task's item is then on its way, so the worker is not killed.
_GRACE_RECHECK_S = 0.05


def utc(unix_time: float) -> datetime:
    """Convert a Unix time to an aware UTC datetime."""
    return datetime.fromtimestamp(unix_time, timezone.utc)


@dataclass
class _CancelRequest:
    """Cancel request of one task. Times are on the event loop clock."""

    requested_at: float
    grace_s: float
    # The kill of the worker is put off until this time while the task's item is on its way.
    recheck_at: float = 0.0


class BatchRun:
    """Outcomes of one batch, filled in task order by one or more worker processes."""

    def __init__(self, spec: FunctionSpec, tasks: Sequence[dict[str, Any]]) -> None:
        self.spec = spec
        self.tasks = list(tasks)
        self.task_ids = [task_id_of(task) for task in self.tasks]
        self.outcomes: list[TaskOutcome | None] = [None] * len(self.tasks)
        self.next_index = 0
        self._indexes_by_id: dict[str, list[int]] = {}
        for index, task_id in enumerate(self.task_ids):
            if task_id:
                self._indexes_by_id.setdefault(task_id, []).append(index)
        self._cancels: dict[int, _CancelRequest] = {}
        # The worker that runs the tasks from _offset to _end - 1, while run_on runs.
        self._worker: WorkerProcess | None = None
        self._offset = 0
        self._end = 0
        # Loop time from which the task at next_index counts as started.
        self._current_since = 0.0
        self._wait: asyncio.Timeout | None = None

    @property
    def done(self) -> bool:
        """Whether every task has an outcome."""
        return self.next_index >= len(self.tasks)

    def results(self) -> list[TaskOutcome]:
        """Return the outcomes in task order. Call it only when ``done`` is true."""
        assert self.done
        return [outcome for outcome in self.outcomes if outcome is not None]

    def cancel(self, task_id: str, grace_s: float) -> bool:
        """Cancel the tasks with id ``task_id`` that have no outcome yet, and return whether there was one.

        A task that has not started is skipped when a worker reaches it. The
        handler of a running task is interrupted, and its worker is killed if
        the handler still runs ``grace_s`` seconds after the later of the
        request and the task's start. Call it in the thread of the event loop
        that runs the batch.
        """
        loop = asyncio.get_running_loop()
        found = False
        for index in self._indexes_by_id.get(task_id, ()):
            if self.outcomes[index] is not None:
                continue
            found = True
            if index in self._cancels:
                continue
            self._cancels[index] = _CancelRequest(loop.time(), grace_s)
            worker = self._worker
            if worker is None or not self._offset <= index < self._end:
                # run_on sets the task's cancel flag when it sends the task to a worker.
                continue
            worker.interrupt(index - self._offset)
            if index == self.next_index and self._wait is not None:
                kill_at = self._kill_deadline()
                when = self._wait.when()
                if when is None or kill_at < when:
                    self._wait.reschedule(kill_at)
        return found

    def fail_remaining(self, error: dict[str, str], raw_logs: Sequence[Sequence[Any]], started: float) -> None:
        """Fail every task without an outcome with ``error`` and the ``[unix_time, level, text]`` entries of ``raw_logs``.

        Cancelled tasks fail with TaskCanceled instead.
        """
        finished = time.time()
        canceled_error = make_error(RUNTIME, TASK_CANCELED, TASK_CANCELED_MESSAGE)
        canceled_entry = (finished, "ERROR", f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE} before it started")
        for index in range(self.next_index, len(self.tasks)):
            if self.outcomes[index] is not None:
                continue
            task_id = self.task_ids[index]
            entries = [tuple(entry) for entry in raw_logs]
            task_error = error
            if index in self._cancels:
                entries.append(canceled_entry)
                task_error = canceled_error
            logs = [(utc(entry[0]), format_log_line(entry[0], task_id, entry[1], entry[2])) for entry in entries]
            self.outcomes[index] = TaskOutcome(task_id, False, None, task_error, logs, utc(started), utc(finished))
        self.next_index = len(self.tasks)

    async def run_on(self, worker: WorkerProcess) -> None:
        """Send tasks without an outcome to ``worker`` and wait until they are done or the worker dies.

        One call sends at most MAX_BATCH_TASKS tasks, so the caller calls it
        again while tasks remain. A task that exceeds the time limit gets
        Runtime.Timeout, one that is running when the worker dies gets
        Runtime.ExitError, and a cancelled one gets TaskCanceled in both cases
        and when its handler does not stop within the grace period. The worker
        is then killed and reaped before this method returns, and the caller
        runs the remaining tasks on a new worker.
        """
        offset = self.next_index
        end = min(len(self.tasks), offset + MAX_BATCH_TASKS)
        canceled = [index - offset for index in self._cancels if offset <= index < end]
        worker.send_batch(self.tasks[offset:end], canceled)
        self._worker = worker
        self._offset = offset
        self._end = end
        try:
            await self._receive_items(worker)
        finally:
            self._worker = None
            self._wait = None

    async def _receive_items(self, worker: WorkerProcess) -> None:
        loop = asyncio.get_running_loop()
        time_limit_s = self.spec.time_limit_s
        attempt_started = time.time()
        # Each task's deadline counts from the arrival of the previous task's
        # item, which is never earlier than the moment the worker started it.
        self._current_since = loop.time()
        while self.next_index < self._end:
            time_deadline = self._current_since + time_limit_s
            try:
                async with asyncio.timeout_at(min(time_deadline, self._kill_deadline())) as wait:
                    self._wait = wait
                    try:
                        messages = await worker.receive()
                    finally:
                        self._wait = None
            except TimeoutError:
                if self._kill_deadline() < time_deadline:
                    if await self._end_canceled_task(worker, attempt_started):
                        return
                    continue
                await self._end_worker(worker)
                if self.next_index < self._end:
                    logger.warning(
                        "Task %s of function %s exceeded the time limit of %.2f s; killed worker %d",
                        self.task_ids[self.next_index],
                        self.spec.name,
                        time_limit_s,
                        worker.pid,
                        extra={"event": "task_timed_out", "task_id": self.task_ids[self.next_index],
                               "function": self.spec.name},
                    )
                message = f"Task timed out after {time_limit_s:.2f} seconds"
                error = make_error(RUNTIME, TIMEOUT, message)
                self._fail_next(error, worker.output_tail(attempt_started), attempt_started)
                return
            except (WorkerExited, ProtocolError) as exc:
                await self._handle_worker_failure(worker, attempt_started, exc)
                return
            try:
                accepted = self._accept(messages)
            except ProtocolError as exc:
                await self._handle_worker_failure(worker, attempt_started, exc)
                return
            if accepted:
                self._current_since = loop.time()

    def _kill_deadline(self) -> float:
        """Return the loop time at which the cancelled task at next_index must have ended, or infinity."""
        request = self._cancels.get(self.next_index)
        if request is None:
            return math.inf
        return max(max(request.requested_at, self._current_since) + request.grace_s, request.recheck_at)

    async def _end_canceled_task(self, worker: WorkerProcess, attempt_started: float) -> bool:
        """Kill ``worker`` if the cancelled task at next_index still runs after its grace period.

        Returns whether the worker was killed. The grace period of a task whose
        handler has already ended is extended, because its item is on its way.
        """
        index = self.next_index
        request = self._cancels[index]
        if not worker.is_running(index - self._offset):
            request.recheck_at = asyncio.get_running_loop().time() + _GRACE_RECHECK_S
            return False
        await self._end_worker(worker)
        if self.next_index != index:
            # The handler ended between the check and the kill. The next task
            # was not cancelled, so it is not failed: it runs again on a new worker.
            return True
        logger.warning(
            "Cancelled task %s of function %s did not stop within %.2f s of the interrupt; killed worker %d",
            self.task_ids[index],
            self.spec.name,
            request.grace_s,
            worker.pid,
            extra={"event": "canceled_task_killed", "task_id": self.task_ids[index], "function": self.spec.name},
        )
        error = make_error(RUNTIME, TASK_CANCELED, TASK_CANCELED_MESSAGE)
        log_text = (
            f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE}, and the handler did not stop within "
            f"{request.grace_s:.2f} seconds, so its worker process was killed"
        )
        self._fail_next(error, worker.output_tail(attempt_started), attempt_started, log_text)
        return True

    async def _handle_worker_failure(self, worker: WorkerProcess, attempt_started: float, exc: Exception) -> None:
        await self._end_worker(worker)
        if worker.stopped_by_pool:
            raise PoolClosedError("RuntimePool was closed while the batch was running")
        if self.next_index >= self._end:
            return
        if isinstance(exc, ProtocolError):
            error = make_error(RUNTIME, PROTOCOL_ERROR, f"Runtime sent an invalid message: {exc}")
        else:
            error = make_error(RUNTIME, EXIT_ERROR, f"Runtime exited with {worker.describe_exit()}")
        logger.warning(
            "Worker %d of function %s failed during task %s: %s",
            worker.pid,
            self.spec.name,
            self.task_ids[self.next_index],
            error["message"],
            extra={"event": "runtime_failed", "task_id": self.task_ids[self.next_index], "function": self.spec.name},
        )
        self._fail_next(error, worker.output_tail(attempt_started), attempt_started)

    async def _end_worker(self, worker: WorkerProcess) -> None:
        """Kill and reap ``worker``, then accept the items it had finished but not delivered."""
        worker.kill()
        await worker.wait_exited()
        for messages in (worker.take_received(), worker.recover_items()):
            try:
                self._accept(messages)
            except ProtocolError as exc:
                logger.warning("Ignored invalid items of dead worker %d of function %s: %s", worker.pid, self.spec.name, exc)

    def _accept(self, messages: list[Any]) -> int:
        """Store outcomes from task items of the current batch message and return how many new outcomes were stored."""
        accepted = 0
        for message in messages:
            if isinstance(message, dict):
                logger.warning("Ignored unexpected %r message from a worker of function %s", message.get("kind"), self.spec.name)
                continue
            if not isinstance(message, list) or len(message) != _ITEM_FIELDS or not isinstance(message[0], int):
                raise ProtocolError(f"task item has an invalid layout: {str(message)[:200]}")
            index = self._offset + message[0]
            if not self._offset <= index < self._end:
                raise ProtocolError(f"task item index {message[0]} is outside the batch")
            if self.outcomes[index] is None:
                self.outcomes[index] = self._outcome(index, message)
                accepted += 1
        self._skip_finished()
        return accepted

    def _skip_finished(self) -> None:
        while self.next_index < len(self.tasks) and self.outcomes[self.next_index] is not None:
            self.next_index += 1

    def _outcome(self, index: int, item: list[Any]) -> TaskOutcome:
        _, ok, result, error, logs, started, finished = item
        try:
            log_entries = [(utc(entry[0]), entry[1]) for entry in logs]
            return TaskOutcome(
                self.task_ids[index],
                ok is True,
                result if ok is True else None,
                None if ok is True else error,
                log_entries,
                utc(started),
                utc(finished),
            )
        except (TypeError, ValueError, IndexError, OverflowError, OSError) as exc:
            raise ProtocolError(f"task item has invalid fields: {exc}") from None

    def _fail_next(
        self,
        error: dict[str, str],
        extra_logs: list[tuple[float, str, str]],
        attempt_started: float,
        log_text: str | None = None,
    ) -> None:
        """Fail the first task without an outcome, the one that was running, with ``error``.

        ``log_text`` is the text of the ERROR line added to the task's logs,
        ``"<name>: <message>"`` of ``error`` by default. A cancelled task fails
        with TaskCanceled, and the line names ``error`` as the reason.
        """
        index = self.next_index
        if index >= self._end:
            return
        if log_text is None:
            log_text = f"{error['name']}: {error['message']}"
        if index in self._cancels and error["name"] != TASK_CANCELED:
            log_text = f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE} ({log_text})"
            error = make_error(RUNTIME, TASK_CANCELED, TASK_CANCELED_MESSAGE)
        previous = self.outcomes[index - 1] if index > self._offset else None
        started_at = previous.finished_at if previous is not None else utc(attempt_started)
        finished = time.time()
        task_id = self.task_ids[index]
        entries = [*extra_logs, (finished, "ERROR", log_text)]
        logs = [(utc(at), format_log_line(at, task_id, level, text)) for at, level, text in entries]
        self.outcomes[index] = TaskOutcome(task_id, False, None, error, logs, started_at, utc(finished))
        self.next_index += 1
        self._skip_finished()
