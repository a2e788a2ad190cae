"""Runs any set of roles in one process with shared pools, clients and health state.

Shutdown order: stop consuming and claiming, let running tasks finish (the worker's own
grace period), publish what the outbox holds, then close the runtime, producer and pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from taskservice.config import Settings
from taskservice.consumers.dispatch import DispatcherTable
from taskservice.consumers.ingest import IngestConsumer
from taskservice.errors import DatabaseUnavailableError
from taskservice.functions import RuntimePool
from taskservice.health import Health
from taskservice.kafka import create_producer, ensure_topics
from taskservice.observability.multiprocess import release_process_metrics
from taskservice.observability.sampler import MetricsSampler
from taskservice.relay.outbox import OutboxRelay
from taskservice.scheduler.scheduler import Scheduler
from taskservice.store.db import create_pool
from taskservice.store.notify import Notifier
from taskservice.store.repository import Repository
from taskservice.store.schedule_repository import ScheduleRepository
from taskservice.workers.catalog import FunctionCatalog
from taskservice.workers.sweeper import LeaseSweeper
from taskservice.workers.worker import Worker

logger = logging.getLogger(__name__)

ROLES = ("ingest", "worker", "relay", "sweeper", "scheduler", "http")
# Loops that mark progress in Health; liveness fails when one stops advancing.
WATCHED_LOOPS = ("ingest", "worker", "relay", "sweeper", "scheduler")
HEALTH_CHECK_INTERVAL_S = 2.0


@dataclass
class Service:
    """The roles of one process and what they share."""

    settings: Settings
    roles: tuple[str, ...]
    health: Health = field(default_factory=Health)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _cleanup: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    ingest_assigned: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.health.stall_timeout_s = self.settings.health_stall_timeout_s

    async def run(self) -> None:
        """Start the roles and run until stop() is called or a role fails."""
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROLES)}")
        try:
            await self._start()
            logger.info("service running roles: %s", ", ".join(self.roles),
                        extra={"event": "service_started", "roles": list(self.roles)})
            await self._supervise()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask every role to finish its current step and stop."""
        self.stopping.set()

    async def _start(self) -> None:
        settings = self.settings
        assert settings.database_url, "database_url must be set before the service starts"
        pool = await create_pool(settings.database_url, size=settings.database_pool_size, role="-".join(self.roles))
        self._cleanup.append(pool.close)
        repository = Repository(pool)
        work_repository = repository
        if {"worker", "relay", "sweeper"} & set(self.roles):
            work_pool = await create_pool(
                settings.database_url, size=settings.database_pool_size, role="-".join(self.roles),
                durable_commits=False,
            )
            self._cleanup.append(work_pool.close)
            work_repository = Repository(work_pool)
        notifier = Notifier(
            settings.database_url,
            ["taskservice_tasks", "taskservice_outbox", "taskservice_definitions", "taskservice_cancel",
             "taskservice_schedules"],
        )
        self._spawn("notifier", notifier.run(self.stopping))
        self._spawn("health-check", self._check_health(pool))

        producer = None
        if "ingest" in self.roles or "relay" in self.roles:
            await ensure_topics(settings, [*settings.topics, settings.results_topic, settings.dead_letter_topic])
            producer = create_producer(settings)
            await producer.start()
            self._cleanup.insert(0, producer.stop)
            self._producer = producer

        if "ingest" in self.roles:
            dispatchers = DispatcherTable(repository)
            await dispatchers.reload()
            self._spawn("dispatcher-refresh", self._refresh_dispatchers(dispatchers, notifier.event("taskservice_definitions")))
            assert producer is not None
            ingest = IngestConsumer(settings, repository, producer, dispatchers, self.health)
            ingest.assigned = self.ingest_assigned
            self._spawn("ingest", ingest.run(self.stopping))
        if "worker" in self.roles:
            runtime = RuntimePool(
                max_processes_per_function=settings.runtime_processes_per_function,
                max_result_bytes=settings.max_result_bytes,
                max_log_bytes=settings.max_log_bytes,
                idle_timeout_s=settings.runtime_idle_timeout_s,
            )
            self._cleanup.insert(0, runtime.close)
            catalog = FunctionCatalog(repository, settings.state_dir / "code")
            # Every definitions notification marks the catalog stale, whichever loop clears the event.
            notifier.subscribe("taskservice_definitions", lambda _payload: catalog.mark_stale())
            worker = Worker(settings, work_repository, runtime, catalog, self.health, notifier.event("taskservice_tasks"))
            notifier.subscribe("taskservice_cancel", worker.request_cancel)
            self._spawn("worker", worker.run(self.stopping))
        if "sweeper" in self.roles or "scheduler" in self.roles:
            # The scheduler role includes the lease sweep; one sweep per process is enough.
            self._spawn("sweeper", LeaseSweeper(settings, work_repository, self.health).run(self.stopping))
            self._spawn("metrics-sampler", MetricsSampler(settings, repository).run(self.stopping))
        if "scheduler" in self.roles:
            scheduler = Scheduler(settings, repository, ScheduleRepository(pool), self.health,
                                  notifier.event("taskservice_schedules"))
            self._spawn("scheduler", scheduler.run(self.stopping))
        if "relay" in self.roles:
            assert producer is not None
            relay = OutboxRelay(settings, work_repository.pool, work_repository, producer, self.health,
                                notifier.event("taskservice_outbox"))
            self._spawn("relay", relay.run(self.stopping))
        if settings.http_port:
            await self._start_http(pool)

    def _spawn(self, name: str, coroutine: Awaitable[Any]) -> None:
        if name in WATCHED_LOOPS:
            self.health.watch(name)
        self._tasks.append(asyncio.create_task(coroutine, name=name))  # type: ignore[arg-type]

    async def _supervise(self) -> None:
        stop_waiter = asyncio.create_task(self.stopping.wait(), name="stop-waiter")
        done, _pending = await asyncio.wait([*self._tasks, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        for task in done:
            if task is stop_waiter or task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                logger.error("role %s failed; stopping the service", task.get_name(), exc_info=error,
                             extra={"event": "role_failed", "role": task.get_name()})
                self.stopping.set()
                raise RuntimeError(f"role {task.get_name()} failed: {error}") from error
            if not self.stopping.is_set():
                logger.error("role %s stopped unexpectedly", task.get_name(),
                             extra={"event": "role_stopped", "role": task.get_name()})
                self.stopping.set()

    async def _shutdown(self) -> None:
        self.stopping.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=60)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.health.unwatch_all()
        for close in self._cleanup:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), timeout=10)
        release_process_metrics()
        logger.info("service stopped", extra={"event": "service_stopped"})

    async def _refresh_dispatchers(self, dispatchers: DispatcherTable, changed: asyncio.Event) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=self.settings.dispatcher_refresh_interval_s)
            changed.clear()
            try:
                await dispatchers.reload()
            except DatabaseUnavailableError as exc:
                logger.warning("cannot reload dispatchers: %s", exc, extra={"event": "dispatcher_reload_failed"})

    async def _check_health(self, pool: Any) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout=HEALTH_CHECK_INTERVAL_S)
                self.health.database_ok = True
            except (OSError, asyncio.TimeoutError, DatabaseUnavailableError, Exception):  # noqa: BLE001
                self.health.database_ok = False
            producer = getattr(self, "_producer", None)
            if producer is not None:
                try:
                    await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=HEALTH_CHECK_INTERVAL_S)
                    self.health.broker_ok = True
                except (KafkaError, asyncio.TimeoutError):
                    self.health.broker_ok = False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=HEALTH_CHECK_INTERVAL_S)

    async def _start_http(self, pool: Any) -> None:
        import uvicorn

        from taskservice.api.app import create_app
        from taskservice.api.operations import bind_socket, create_operations_app

        host, port = self.settings.http_host, self.settings.http_port
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            if "http" in self.roles:
                raise
            # Outside the http role, health and metrics are auxiliary. Several processes on
            # one host with the default port keep running, and the first one serves them.
            logger.error("cannot serve health and metrics on %s:%d, running without them: %s", host, port, exc,
                         extra={"event": "operations_http_failed"})
            return

        # Every process serves health and metrics; only the http role serves the API.
        if "http" in self.roles:
            app = create_app(self.health, self.settings, pool)
        else:
            app = create_operations_app(self.health)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

        async def serve() -> None:
            serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-serve")
            stop_waiter = asyncio.create_task(self.stopping.wait(), name="http-stop")
            await asyncio.wait({serving, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stop_waiter.cancel()
            await serving

        self._spawn("http", serve())


def parse_roles(values: Iterable[str]) -> tuple[str, ...]:
    """Split comma-separated role names and check each one."""
    roles: list[str] = []
    for value in values:
        for role in value.split(","):
            role = role.strip()
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
            if role not in roles:
                roles.append(role)
    return tuple(roles)
