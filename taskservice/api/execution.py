"""Synchronous runs in the HTTP process: direct execution and API functions.

Both run at once in this process's own RuntimePool, so queued work never delays them.
A direct execution records a task that is inserted already `inProgress` for this
process (no worker claims it), runs it, and stores the outcome through `finish_tasks`
like a worker would, with no retries because the caller waits. An API-function call
creates no task; its record is written after the response, on a best-effort basis.
Each kind has a cap on runs at once per process; a call past it is rejected at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from taskservice.api.errors import (
    ConcurrentApiFunctionLimitError,
    ConcurrentExecutionLimitError,
    LambdaInvocationError,
)
from taskservice.config import Settings
from taskservice.functions import FunctionSpec, RuntimePool, TaskOutcome
from taskservice.store.api_repository import ApiRepository
from taskservice.store.db import Record
from taskservice.store.repository import Repository
from taskservice.workers.catalog import FunctionCatalog
from taskservice.workers.outcome import finish_row
from taskservice.workers.worker import task_wire_form

logger = logging.getLogger(__name__)


class Executor:
    """Runs direct executions and API functions with per-kind caps on runs at once."""

    def __init__(self, settings: Settings, repository: Repository, api: ApiRepository) -> None:
        self._settings = settings
        self._repository = repository
        self._api = api
        self._runtime = RuntimePool(
            max_processes_per_function=settings.runtime_processes_per_function,
            max_result_bytes=settings.max_result_bytes,
            max_log_bytes=settings.max_log_bytes,
            idle_timeout_s=settings.runtime_idle_timeout_s,
        )
        self._catalog = FunctionCatalog(repository, Path(settings.state_dir) / "code")
        self._seen_versions: dict[str, datetime] = {}
        self._running = {"execute": 0, "api": 0}
        self._background: set[asyncio.Task[None]] = set()
        self.worker_id = f"http:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    async def close(self) -> None:
        """Wait for pending API-request records, then stop the runtime processes."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)
        await self._runtime.close()

    def running(self, kind: str) -> int:
        """Return the number of runs of kind ("execute" or "api") in progress."""
        return self._running[kind]

    @contextmanager
    def slot(self, kind: str) -> Iterator[None]:
        """Hold one of the run slots of kind ("execute" or "api"); raise the cap's error when none is free."""
        cap = (self._settings.direct_execution_max_concurrency if kind == "execute"
               else self._settings.api_function_max_concurrency)
        if self._running[kind] >= cap:
            if kind == "execute":
                raise ConcurrentExecutionLimitError(f"{cap} direct executions are already running; retry later")
            raise ConcurrentApiFunctionLimitError(f"{cap} API-function calls are already running; retry later")
        self._running[kind] += 1
        try:
            yield
        finally:
            self._running[kind] -= 1

    async def spec_for(self, function: Record) -> FunctionSpec:
        """Return the runnable spec of a function row from get_function; raise 1405 when it has none."""
        name = function["name"]
        if self._seen_versions.get(name) != function["update_timestamp"]:
            # The function changed since this process last ran it: reload the catalog.
            self._catalog.mark_stale()
            self._seen_versions[name] = function["update_timestamp"]
        entry = await self._catalog.get(name)
        if entry is None or entry.spec is None:
            reason = entry.unavailable_reason if entry is not None else "FUNCTION_NOT_FOUND"
            raise LambdaInvocationError(f"function {name!r} cannot be started: {reason}")
        return entry.spec

    async def run_task(self, spec: FunctionSpec, row: Record) -> TaskOutcome:
        """Run a direct execution's task and store its outcome; return the outcome."""
        [outcome] = await self._runtime.run_batch(spec, [task_wire_form(row)])
        failed_topic = self._settings.task_failed_events_topic
        finished = finish_row(outcome, row["attempt"], None, task_failed_events=bool(failed_topic))
        # Stored even when the client went away, so the task does not wait for the sweep.
        await asyncio.shield(self._repository.finish_tasks([finished], self._settings.results_topic, failed_topic))
        return outcome

    async def run_request(self, spec: FunctionSpec, event: dict[str, Any]) -> TaskOutcome:
        """Run an API function with an API Gateway request object; return the outcome."""
        [outcome] = await self._runtime.run_batch(spec, [event])
        return outcome

    def record_request(self, record: dict[str, Any], logs: list[tuple[datetime, str]]) -> None:
        """Store an API request record in the background; a failure is logged, never raised."""
        task = asyncio.create_task(self._store_request(record, logs), name="api-request-record")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_request(self, record: dict[str, Any], logs: list[tuple[datetime, str]]) -> None:
        try:
            await self._api.insert_api_request(record, logs)
        except Exception as exc:  # noqa: BLE001 - the record is best-effort by contract
            logger.warning("cannot store API request record %s: %s", record["id"], exc,
                           extra={"event": "api_request_record_failed", "api_request_id": record["id"],
                                  "function": record["function_name"]})
