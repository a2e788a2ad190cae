"""Pool of warm worker processes that run batches of tasks for each function."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from taskservice.functions.batch import BatchRun
from taskservice.functions.child_tasks import is_valid_entry_point
from taskservice.functions.process import WorkerProcess, WorkerSettings, validate_environment
from taskservice.functions.spec import (
    IMPORT_MODULE_ERROR,
    INVALID_ENTRYPOINT,
    INVALID_ENVIRONMENT,
    INVOCATION,
    FunctionSpec,
    PoolClosedError,
    TaskOutcome,
    make_error,
)

logger = logging.getLogger("taskservice.functions")

# Seconds an idle worker gets to exit after its command pipe closes, before it
# is killed. A worker that runs a task when the pool closes is killed at once.
_STOP_GRACE_S = 1.0


class _FunctionSlots:
    """Worker processes of one function: idle ones for reuse, and a count of busy ones."""

    def __init__(self, limit: int, retire: Callable[[WorkerProcess], None]) -> None:
        self.limit = limit
        self.idle: list[WorkerProcess] = []
        self.busy = 0
        self.spec: FunctionSpec | None = None
        self.closed = False
        self._retire = retire
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, spec: FunctionSpec) -> WorkerProcess | None:
        """Reserve a slot and return an idle worker started with ``spec``, or None when the caller must start one.

        ``spec`` becomes the latest spec of the function: idle workers started
        with another spec, such as an older version, are stopped.
        """
        self.spec = spec
        while True:
            if self.closed:
                raise PoolClosedError("RuntimePool is closed")
            self._retire_unusable()
            if self.idle:
                self.busy += 1
                return self.idle.pop()
            if self.busy < self.limit:
                self.busy += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise

    def release(self, worker: WorkerProcess | None) -> None:
        """Free a slot, keeping ``worker`` for reuse if it is alive and runs the latest spec."""
        self.busy -= 1
        if worker is not None:
            if worker.alive and worker.spec == self.spec and not self.closed:
                worker.last_used = time.monotonic()
                self.idle.append(worker)
            else:
                self._retire(worker)
        self._wake_one()

    def take_expired(self, now: float, idle_timeout_s: float) -> list[WorkerProcess]:
        """Remove and return idle workers that are dead or were idle longer than ``idle_timeout_s``."""
        expired = [worker for worker in self.idle if not worker.alive or now - worker.last_used > idle_timeout_s]
        if expired:
            self.idle = [worker for worker in self.idle if worker not in expired]
            self._wake_one()
        return expired

    def close(self) -> list[WorkerProcess]:
        """Reject waiting and future acquire calls, and return the idle workers."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError("RuntimePool is closed"))
        idle, self.idle = self.idle, []
        return idle

    def _retire_unusable(self) -> None:
        usable: list[WorkerProcess] = []
        for worker in self.idle:
            if worker.alive and worker.spec == self.spec:
                usable.append(worker)
            else:
                self._retire(worker)
        self.idle = usable

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class RuntimePool:
    """Runs batches of tasks in isolated, reused worker processes, one pool of processes per function.

    Each worker process runs one batch at a time. Concurrent batches of the
    same function use separate processes, up to ``max_processes_per_function``,
    and further batches wait for a free one. A worker is reused only for a
    spec equal to the one it was started with, so a new version, or any other
    changed field, gets a new process. Workers idle for longer than
    ``idle_timeout_s`` are stopped. ``init_timeout_s`` limits the import of the
    handler module in a new worker.

    ``python`` is the interpreter of the workers. It must be CPython 3.11 or
    newer (workers start with ``-P``) and must be able to import orjson.
    ``max_result_bytes`` limits the JSON size of a handler result and
    ``max_log_bytes`` the log lines kept per task.
    """

    def __init__(
        self,
        *,
        max_processes_per_function: int = 2,
        max_result_bytes: int = 6 * 1024 * 1024,
        max_log_bytes: int = 256 * 1024,
        idle_timeout_s: float = 300.0,
        python: str = sys.executable,
        init_timeout_s: float = 10.0,
    ) -> None:
        if max_processes_per_function < 1:
            raise ValueError(f"max_processes_per_function must be at least 1, got {max_processes_per_function}")
        if max_result_bytes < 1 or max_log_bytes < 1:
            raise ValueError("max_result_bytes and max_log_bytes must be positive")
        if idle_timeout_s <= 0 or init_timeout_s <= 0:
            raise ValueError("idle_timeout_s and init_timeout_s must be positive")
        self._max_processes = max_processes_per_function
        self._idle_timeout_s = idle_timeout_s
        self._init_timeout_s = init_timeout_s
        self._settings = WorkerSettings(python=python, max_result_bytes=max_result_bytes, max_log_bytes=max_log_bytes)
        self._functions: dict[str, _FunctionSlots] = {}
        self._workers: set[WorkerProcess] = set()
        self._runs: set[BatchRun] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    async def run_batch(self, spec: FunctionSpec, tasks: Sequence[dict[str, Any]]) -> list[TaskOutcome]:
        """Run ``tasks`` (wire-form task dicts) with the function ``spec`` and return one outcome per task, in order.

        Failures of user code (exceptions, invalid results, time limit, crash,
        import errors) become failed outcomes. Raises PoolClosedError when the
        pool is closed before or during the batch.
        """
        if self._closed:
            raise PoolClosedError("RuntimePool is closed")
        run = BatchRun(spec, tasks)
        if run.done:
            return []
        problem = _check_spec(spec)
        if problem is not None:
            run.fail_remaining(problem, [], time.time())
            return run.results()

        self._start_reaper()
        self._runs.add(run)
        try:
            await self._run_on_workers(spec, run)
        finally:
            self._runs.discard(run)
        return run.results()

    async def prestart(self, spec: FunctionSpec) -> bool:
        """Start one worker process for ``spec`` ahead of its first batch; return whether one started.

        Nothing starts when the function already has an idle worker or no free slot. A
        handler module that fails to import is reported by the first batch, not here.
        """
        if self._closed or _check_spec(spec) is not None:
            return False
        slots = self._slots(spec.name)
        if slots.idle or slots.busy >= slots.limit:
            return False
        worker = await slots.acquire(spec)
        try:
            if worker is None:
                worker = await self._start_worker(spec)
                failure = await worker.initialize(self._init_timeout_s)
                if failure is not None:
                    self._workers.discard(worker)
                    worker = None
        finally:
            slots.release(worker)
        return worker is not None

    def cancel(self, task_id: str, grace_s: float = 5.0) -> bool:
        """Cancel task ``task_id`` in the batches of this pool. Return whether a batch had it without an outcome.

        Returns False for an unknown task and for one that already has its
        outcome. Otherwise the task fails with TaskCanceled, unless its handler
        ends before the interrupt reaches it:

        * A task that has not started is skipped, and its handler never runs.
          This holds for a batch that waits for a free worker process as well.
        * The handler of a running task is interrupted. A sync handler gets a
          TaskCanceled exception, which derives from BaseException, and the
          asyncio task of an async handler is cancelled. The worker goes on
          with the rest of the batch.
        * A handler may catch the exception, or block in code that a signal
          does not interrupt. When it still runs ``grace_s`` seconds after the
          later of the call and the task's start, the worker is killed, and
          the rest of the batch runs on a new worker.

        Other tasks, and workers of other batches, are not affected. Call it in
        the thread of the event loop that runs the batches.
        """
        if not (isinstance(grace_s, (int, float)) and math.isfinite(grace_s)) or grace_s < 0:
            raise ValueError(f"grace_s must be a finite number of seconds, 0 or more, got {grace_s!r}")
        found = False
        for run in list(self._runs):
            if run.cancel(task_id, grace_s):
                found = True
        if found:
            logger.debug("Cancelling task %s", task_id)
        return found

    async def _run_on_workers(self, spec: FunctionSpec, run: BatchRun) -> None:
        slots = self._slots(spec.name)
        worker = await slots.acquire(spec)
        try:
            while not run.done:
                if worker is not None and not worker.alive:
                    await self._stop_worker(worker, 0)
                    worker = None
                if worker is None:
                    worker = await self._start_worker(spec)
                    started = time.time()
                    failure = await worker.initialize(self._init_timeout_s)
                    if failure is not None:
                        self._workers.discard(worker)
                        worker = None
                        if self._closed:
                            raise PoolClosedError("RuntimePool was closed while a worker process started")
                        run.fail_remaining(failure.error, failure.logs, started)
                        break
                await run.run_on(worker)
        except BaseException:
            if worker is not None:
                worker.kill()
            raise
        finally:
            slots.release(worker)

    async def close(self) -> None:
        """Stop every worker process and wait until all have exited and been reaped.

        Batches still running raise PoolClosedError.
        """
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle: set[WorkerProcess] = set()
        for slots in self._functions.values():
            idle.update(slots.close())
        stops = [self._stop_worker(worker, _STOP_GRACE_S if worker in idle else 0) for worker in list(self._workers)]
        await asyncio.gather(*stops, return_exceptions=True)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _slots(self, function_name: str) -> _FunctionSlots:
        slots = self._functions.get(function_name)
        if slots is None:
            slots = _FunctionSlots(self._max_processes, self._retire)
            self._functions[function_name] = slots
        return slots

    async def _start_worker(self, spec: FunctionSpec) -> WorkerProcess:
        worker = WorkerProcess(spec, self._settings)
        self._workers.add(worker)
        try:
            await worker.start()
        except BaseException:
            # stop() kills the process if it was started and releases its pipes and folder.
            self._retire(worker)
            raise
        if self._closed:
            await self._stop_worker(worker, 0)
            raise PoolClosedError("RuntimePool was closed while a worker process started")
        return worker

    async def _stop_worker(self, worker: WorkerProcess, grace_s: float) -> None:
        try:
            await worker.stop(grace_s)
        finally:
            self._workers.discard(worker)

    def _retire(self, worker: WorkerProcess) -> None:
        """Stop ``worker`` in the background. ``close`` waits for these stops."""
        task = asyncio.ensure_future(self._stop_worker(worker, _STOP_GRACE_S))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_idle_workers())

    async def _reap_idle_workers(self) -> None:
        interval_s = min(max(self._idle_timeout_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for slots in self._functions.values():
                for worker in slots.take_expired(now, self._idle_timeout_s):
                    logger.debug("Stopping idle worker process %d of function %s", worker.pid, worker.spec.name)
                    self._retire(worker)


def _check_spec(spec: FunctionSpec) -> dict[str, str] | None:
    """Return an invocation error for a spec that cannot work, or None."""
    if not is_valid_entry_point(spec.entry_point):
        message = f"Entry point {spec.entry_point!r} is invalid: expected 'module.handler' or 'package.module.handler'"
        return make_error(INVOCATION, INVALID_ENTRYPOINT, message)
    problem = validate_environment(spec.environment)
    if problem is not None:
        return make_error(INVOCATION, INVALID_ENVIRONMENT, problem)
    if not spec.code_dir.is_dir():
        return make_error(INVOCATION, IMPORT_MODULE_ERROR, f"Code folder {str(spec.code_dir)!r} does not exist")
    return None
