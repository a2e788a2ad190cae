"""Execution of one batch on worker processes, with time limits and crash recovery."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from taskservice.functions.process import WorkerExited, WorkerProcess
from taskservice.functions.protocol import ProtocolError, format_log_line, task_id_of
from taskservice.functions.spec import (
    EXIT_ERROR,
    PROTOCOL_ERROR,
    RUNTIME,
    TIMEOUT,
    FunctionSpec,
    PoolClosedError,
    TaskOutcome,
    make_error,
)

logger = logging.getLogger("taskservice.functions")

_ITEM_FIELDS = 7


def utc(unix_time: float) -> datetime:
    """Convert a Unix time to an aware UTC datetime."""
    return datetime.fromtimestamp(unix_time, timezone.utc)


class BatchRun:
    """Outcomes of one batch, filled in task order by one or more worker processes."""

    def __init__(self, spec: FunctionSpec, tasks: Sequence[dict[str, Any]]) -> None:
        self.spec = spec
        self.tasks = list(tasks)
        self.task_ids = [task_id_of(task) for task in self.tasks]
        self.outcomes: list[TaskOutcome | None] = [None] * len(self.tasks)
        self.next_index = 0

    @property
    def done(self) -> bool:
        """Whether every task has an outcome."""
        return self.next_index >= len(self.tasks)

    def results(self) -> list[TaskOutcome]:
        """Return the outcomes in task order. Call it only when ``done`` is true."""
        assert self.done
        return [outcome for outcome in self.outcomes if outcome is not None]

    def fail_remaining(self, error: dict[str, str], raw_logs: Sequence[Sequence[Any]], started: float) -> None:
        """Fail every task without an outcome with ``error`` and the ``[unix_time, level, text]`` entries of ``raw_logs``."""
        finished = time.time()
        for index in range(self.next_index, len(self.tasks)):
            task_id = self.task_ids[index]
            logs = [(utc(entry[0]), format_log_line(entry[0], task_id, entry[1], entry[2])) for entry in raw_logs]
            self.outcomes[index] = TaskOutcome(task_id, False, None, error, logs, utc(started), utc(finished))
        self.next_index = len(self.tasks)

    async def run_on(self, worker: WorkerProcess) -> None:
        """Run the tasks without an outcome on ``worker`` until all are done or the worker dies.

        A task that exceeds the time limit gets Runtime.Timeout and one that is
        running when the worker dies gets Runtime.ExitError. In both cases the
        worker is killed and reaped before this method returns, and the caller
        runs the remaining tasks on a new worker.
        """
        loop = asyncio.get_running_loop()
        offset = self.next_index
        time_limit_s = self.spec.time_limit_s
        attempt_started = time.time()
        worker.send_batch(self.tasks[offset:])
        # Each task's deadline counts from the arrival of the previous task's
        # item, which is never earlier than the moment the worker started it.
        deadline = loop.time() + time_limit_s
        while not self.done:
            try:
                async with asyncio.timeout_at(deadline):
                    messages = await worker.receive()
            except TimeoutError:
                await self._end_worker(worker, offset)
                if not self.done:
                    logger.warning(
                        "Task %s of function %s exceeded the time limit of %.2f s; killed worker %d",
                        self.task_ids[self.next_index],
                        self.spec.name,
                        time_limit_s,
                        worker.pid,
                    )
                message = f"Task timed out after {time_limit_s:.2f} seconds"
                error = make_error(RUNTIME, TIMEOUT, message)
                self._fail_next(error, worker.output_tail(attempt_started), offset, attempt_started)
                return
            except (WorkerExited, ProtocolError) as exc:
                await self._handle_worker_failure(worker, offset, attempt_started, exc)
                return
            try:
                accepted = self._accept(messages, offset)
            except ProtocolError as exc:
                await self._handle_worker_failure(worker, offset, attempt_started, exc)
                return
            if accepted:
                deadline = loop.time() + time_limit_s

    async def _handle_worker_failure(
        self, worker: WorkerProcess, offset: int, attempt_started: float, exc: Exception
    ) -> None:
        await self._end_worker(worker, offset)
        if worker.stopped_by_pool:
            raise PoolClosedError("RuntimePool was closed while the batch was running")
        if self.done:
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
        )
        self._fail_next(error, worker.output_tail(attempt_started), offset, attempt_started)

    async def _end_worker(self, worker: WorkerProcess, offset: int) -> None:
        """Kill and reap ``worker``, then accept the items it had finished but not delivered."""
        worker.kill()
        await worker.wait_exited()
        for messages in (worker.take_received(), worker.recover_items()):
            try:
                self._accept(messages, offset)
            except ProtocolError as exc:
                logger.warning("Ignored invalid items of dead worker %d of function %s: %s", worker.pid, self.spec.name, exc)

    def _accept(self, messages: list[Any], offset: int) -> int:
        """Store outcomes from task items and return how many new outcomes were stored."""
        accepted = 0
        for message in messages:
            if isinstance(message, dict):
                logger.warning("Ignored unexpected %r message from a worker of function %s", message.get("kind"), self.spec.name)
                continue
            if not isinstance(message, list) or len(message) != _ITEM_FIELDS or not isinstance(message[0], int):
                raise ProtocolError(f"task item has an invalid layout: {str(message)[:200]}")
            index = offset + message[0]
            if not offset <= index < len(self.tasks):
                raise ProtocolError(f"task item index {message[0]} is outside the batch")
            if self.outcomes[index] is None:
                self.outcomes[index] = self._outcome(index, message)
                accepted += 1
        while self.next_index < len(self.tasks) and self.outcomes[self.next_index] is not None:
            self.next_index += 1
        return accepted

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
        offset: int,
        attempt_started: float,
    ) -> None:
        """Fail the first task without an outcome, the one that was running."""
        index = self.next_index
        if index >= len(self.tasks):
            return
        previous = self.outcomes[index - 1] if index > offset else None
        started_at = previous.finished_at if previous is not None else utc(attempt_started)
        finished = time.time()
        task_id = self.task_ids[index]
        entries = [*extra_logs, (finished, "ERROR", f"{error['name']}: {error['message']}")]
        logs = [(utc(at), format_log_line(at, task_id, level, text)) for at, level, text in entries]
        self.outcomes[index] = TaskOutcome(task_id, False, None, error, logs, started_at, utc(finished))
        self.next_index += 1
        while self.next_index < len(self.tasks) and self.outcomes[self.next_index] is not None:
            self.next_index += 1
