"""Database outages: the test database refuses connections, or the service's backends die.

The outage is real for the test's database only: `ALTER DATABASE ... ALLOW_CONNECTIONS
false` refuses new connections and `pg_terminate_backend` ends the service's open ones,
repeatedly, while the shared server keeps serving other databases. The service must stay
up, report itself not ready, never commit an offset past an event whose task row is not
stored, keep finished outcomes until they are stored, and recover on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from taskservice.config import Settings
from taskservice.embedded.services import free_loopback_port
from tests.faults.common import (
    SERVICE_BACKENDS, database_cut_off, database_name, exh_topic, http_get, log_text, metric_total,
    nothing_pending, terminate_service_backends, wait_for_log,
)
from tests.support import (
    ServiceProcess, TopicReader, committed_offsets, exh_event, fetch, next_offsets, prepare, publish_paced,
    read_json_lines, set_function_env, wait_for,
)

EVENTS_PER_SECOND = 50
PUBLISH_S = 20
OUTAGE_AFTER_S = 3.0
OUTAGE_S = 15.0
# The health check runs every 2 s with a 2 s timeout, so readiness may lag the cut by ~4 s.
READINESS_LAG_S = 5.0
READY_AFTER_RESTORE_S = 30.0
SETTLE_AFTER_RESTORE_S = 60.0
ROLES = "ingest,worker,relay,sweeper,http"
CONNECTION_ERRORS_IN_LOG = ("connection is closed", "InterfaceError")


def _outage_settings(settings: Settings, http_port: int, **updates: Any) -> Settings:
    # A 100 ms function at 50 events/s needs about 5 runs at once, so tasks are claimed 5 at
    # a time for up to 8 runtime processes. The lease keeps its default of 60 s, longer than
    # the outage, so runs that finish during the outage are stored rather than swept as zombies.
    return settings.model_copy(update={
        "http_port": http_port, "database_pool_size": 5, "topic_partitions": 2,
        "worker_claim_batch_size": 5, "worker_max_in_flight": 50, "runtime_processes_per_function": 8,
        **updates,
    })


@dataclass
class Observer:
    """Samples readiness, committed offsets and the process while the test runs."""

    settings: Settings
    http_port: int
    service: ServiceProcess
    readiness: list[tuple[float, int | None]] = field(default_factory=list)
    offsets: list[tuple[float, dict[int, int | None]]] = field(default_factory=list)
    exited_with: int | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        topic = exh_topic(self.settings)
        while not self._stop.is_set():
            status, _body = await http_get(self.http_port, "/health/ready", timeout=1.0)
            self.readiness.append((time.time(), status))
            # The commit happened before committed_offsets returned, so stamp it afterwards.
            offsets = await committed_offsets(self.settings, topic)
            self.offsets.append((time.time(), offsets))
            process = self.service.process
            if process is not None and process.poll() is not None and self.exited_with is None:
                self.exited_with = process.returncode
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=0.5)

    def stop(self) -> None:
        self._stop.set()


async def _check_offsets_never_ahead(settings: Settings, observer: Observer, events: list[dict[str, Any]],
                                     sent: list[Any]) -> None:
    """Every event below a sampled committed offset had its task row when the sample was taken."""
    created = {row["event_id"]: row["created"].timestamp() for row in await fetch(
        settings, "SELECT event_id, min(creation_timestamp) AS created FROM tasks GROUP BY event_id")}
    position = {event["id"]: (record.partition, record.offset) for event, record in zip(events, sent, strict=True)}
    for sampled_at, offsets in observer.offsets:
        for event_id, (partition, offset) in position.items():
            committed = offsets.get(partition)
            if committed is None or offset >= committed:
                continue
            assert event_id in created, \
                f"offset {committed} of partition {partition} was committed past {event_id}, which has no task row"
            assert created[event_id] <= sampled_at, (
                f"offset {committed} of partition {partition} was committed {created[event_id] - sampled_at:.2f} s "
                f"before the task row of {event_id} was stored"
            )


async def _check_one_task_per_event(settings: Settings, events: list[dict[str, Any]]) -> None:
    per_event = Counter({row["event_id"]: row["n"] for row in await fetch(
        settings, "SELECT event_id, count(*) AS n FROM tasks GROUP BY event_id")})
    missing = [event["id"] for event in events if event["id"] not in per_event]
    repeated = {event_id: count for event_id, count in per_event.items() if count != 1}
    assert not missing, f"{len(missing)} events have no task row, e.g. {missing[:5]}"
    assert not repeated, f"events with more than one task row: {list(repeated.items())[:5]}"
    assert sum(per_event.values()) == len(events), f"{sum(per_event.values())} task rows for {len(events)} events"


async def test_database_cut_off_recovers_without_loss(settings: Settings, tmp_path: Path,
                                                      postgres_admin_dsn: str) -> None:
    http_port = free_loopback_port()
    settings = _outage_settings(settings, http_port)
    invocations = tmp_path / "invocations.jsonl"
    log_path = tmp_path / "service.log"
    await prepare(settings, [("user_deleted", "sleep")])
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "0.1")
    await set_function_env(settings, "sleep", "INVOCATION_LOG", str(invocations))
    events = [exh_event(f"user-{number:04d}") for number in range(EVENTS_PER_SECOND * PUBLISH_S)]
    sent: list[Any] = []

    with ServiceProcess(settings, roles=ROLES, log_path=log_path) as service:
        await wait_for_log(log_path, "partitions assigned", timeout=30)
        observer = Observer(settings, http_port, service)
        observing = asyncio.create_task(observer.run())
        publishing = asyncio.create_task(publish_paced(
            settings, exh_topic(settings), events, chunk=EVENTS_PER_SECOND // 10, interval_s=0.1, sent=sent))
        try:
            await asyncio.sleep(OUTAGE_AFTER_S)
            async with database_cut_off(postgres_admin_dsn, settings) as terminated:
                cut_at = time.time()
                await asyncio.sleep(OUTAGE_S)
            restored_at = time.time()
            log_size_at_restore = len(log_text(log_path))
            assert service.process is not None
            exited_during_outage = service.process.poll()
            assert exited_during_outage is None, (
                f"the service exited with {exited_during_outage} during the outage: {_first_error(log_path)}; "
                f"see {log_path}"
            )

            async def ready() -> bool:
                status, _body = await http_get(http_port, "/health/ready")
                return status == 200

            await wait_for(ready, timeout=READY_AFTER_RESTORE_S, message="readiness after the database came back")
            ready_after_s = time.time() - restored_at
            await publishing

            async def settled() -> bool:
                rows = await fetch(settings, "SELECT count(DISTINCT event_id) AS n FROM tasks")
                return rows[0]["n"] == len(events) and await nothing_pending(settings)

            await wait_for(settled, timeout=SETTLE_AFTER_RESTORE_S, message="a task row per event, all final")
            await _wait_for_offsets(settings, next_offsets(sent), postgres_admin_dsn)
            _status, metrics_text = await http_get(http_port, "/metrics")
        finally:
            observer.stop()
            await observing
            if not publishing.done():
                publishing.cancel()
        exit_code = service.process.poll() if service.process else None

    context = (f"outage {cut_at:.1f}..{restored_at:.1f}, backends terminated per round {terminated[:10]}..., "
               f"ready {ready_after_s:.1f} s after the restore")
    assert observer.exited_with is None, \
        f"the service exited with {observer.exited_with} during or after the outage; see {log_path}"
    assert exit_code is None, f"the service exited with {exit_code} after the outage; see {log_path}"
    during = [status for at, status in observer.readiness if cut_at + READINESS_LAG_S <= at < restored_at]
    assert during, "no readiness sample was taken during the outage"
    assert all(status == 503 for status in during), \
        f"readiness during the outage was {Counter(during)}, expected only 503 ({context})"

    await _check_one_task_per_event(settings, events)
    await _check_offsets_never_ahead(settings, observer, events, sent)

    statuses = {row["id"]: row["status"] for row in await fetch(settings, "SELECT id, status FROM tasks")}
    finished_during = {line["task_id"] for line in read_json_lines(invocations)
                       if cut_at <= line["finished"] < restored_at}
    assert finished_during, f"no run finished during the outage, so none had to wait to be stored ({context})"
    not_complete = {task_id: statuses[task_id] for task_id in finished_during if statuses[task_id] != "complete"}
    assert not not_complete, f"runs that finished during the outage ended {Counter(not_complete.values())}"
    assert Counter(statuses.values()) == Counter(complete=len(events)), \
        f"expected every task complete, got {Counter(statuses.values())}"

    after_restore = log_text(log_path)[log_size_at_restore:]
    for text in CONNECTION_ERRORS_IN_LOG:
        lines = [line for line in after_restore.splitlines() if text in line]
        assert not lines, f"{len(lines)} log lines with {text!r} after the restore, e.g. {lines[0][:300]}"
    errors = metric_total(metrics_text, "taskservice_database_errors_total")
    assert errors is not None and errors > 0, f"taskservice_database_errors_total is {errors} after the outage"


def _first_error(log_path: Path) -> str:
    """Return the first ERROR line of the service log, which names the failure that stopped it."""
    errors = [line for line in log_text(log_path).splitlines() if " ERROR " in line]
    return errors[0][:300] if errors else "no ERROR line in the log"


async def _offsets_at(settings: Settings, expected: dict[int, int]) -> bool:
    committed = await committed_offsets(settings, exh_topic(settings))
    return all(committed.get(partition) == offset for partition, offset in expected.items())


async def _wait_for_offsets(settings: Settings, expected: dict[int, int], admin_dsn: str) -> None:
    """Wait until the committed offsets reach expected; on timeout, report them and the service's backends."""
    try:
        await wait_for(lambda: _offsets_at(settings, expected), timeout=30,
                       message="committed offsets at the end of the topic")
    except AssertionError as exc:
        committed = await committed_offsets(settings, exh_topic(settings))
        admin = await asyncpg.connect(admin_dsn)
        try:
            backends = await admin.fetch(
                "SELECT application_name, state, wait_event_type, wait_event, now() - query_start AS running, "
                "left(query, 60) AS query FROM pg_stat_activity WHERE datname = $1", database_name(settings))
        finally:
            await admin.close()
        raise AssertionError(f"{exc}: committed {committed}, expected {expected}, "
                             f"service backends {[dict(row) for row in backends]}") from exc


# Backends terminated while a batch insert runs -----------------------------------------------

INSERT_DELAY_S = 0.3
TERMINATIONS = 3
SLOW_TASK_INSERTS = f"""
CREATE FUNCTION slow_task_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep({INSERT_DELAY_S});
    RETURN NULL;
END $$;
CREATE TRIGGER slow_task_insert AFTER INSERT ON tasks FOR EACH STATEMENT EXECUTE FUNCTION slow_task_insert();
"""
INSERT_IN_FLIGHT = """
SELECT pid FROM pg_stat_activity
WHERE datname = $1 AND application_name LIKE 'taskservice-%' AND state = 'active'
  AND query LIKE '%INSERT INTO tasks%'
"""


async def test_backends_terminated_mid_insert(settings: Settings, tmp_path: Path, postgres_admin_dsn: str) -> None:
    http_port = free_loopback_port()
    settings = _outage_settings(settings, http_port, ingest_batch_max_records=20)
    log_path = tmp_path / "service.log"
    await prepare(settings, [("user_deleted", "echo")])
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.execute(SLOW_TASK_INSERTS)
    finally:
        await connection.close()
    database = database_name(settings)
    events = [exh_event(f"user-{number:04d}") for number in range(400)]
    sent: list[Any] = []
    terminated_inserts: list[int] = []

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        with ServiceProcess(settings, roles=ROLES, log_path=log_path) as service:
            await wait_for_log(log_path, "partitions assigned", timeout=30)
            observer = Observer(settings, http_port, service)
            observing = asyncio.create_task(observer.run())
            publishing = asyncio.create_task(publish_paced(
                settings, exh_topic(settings), events, chunk=20, interval_s=0.1, sent=sent))
            try:
                for _round in range(TERMINATIONS):
                    async def insert_in_flight() -> bool:
                        return bool(await admin.fetch(INSERT_IN_FLIGHT, database))

                    await wait_for(insert_in_flight, timeout=30, interval=0.02, message="a task insert in flight")
                    terminated_inserts.append(await terminate_service_backends(admin, database))
                    await asyncio.sleep(1.0)
                await publishing

                async def settled() -> bool:
                    rows = await fetch(settings, "SELECT count(DISTINCT event_id) AS n FROM tasks")
                    return rows[0]["n"] == len(events) and await nothing_pending(settings)

                await wait_for(settled, timeout=60, message="a task row per event, all final")
                await _wait_for_offsets(settings, next_offsets(sent), postgres_admin_dsn)
                remaining = await admin.fetch(SERVICE_BACKENDS, database)
            finally:
                observer.stop()
                await observing
                if not publishing.done():
                    publishing.cancel()
            exit_code = service.process.poll() if service.process else None
    finally:
        await admin.close()

    assert observer.exited_with is None, \
        f"the service exited with {observer.exited_with} after its backends were terminated; see {log_path}"
    assert exit_code is None, f"the service exited with {exit_code} after its backends were terminated"
    assert all(count > 0 for count in terminated_inserts), f"terminations per round: {terminated_inserts}"
    assert "operation=insert_tasks" in log_text(log_path), \
        "the service never retried an interrupted task insert, so no insert was cut off"
    assert remaining, "the service did not reconnect to its database"
    await _check_one_task_per_event(settings, events)
    await _check_offsets_never_ahead(settings, observer, events, sent)
    statuses = Counter(row["status"] for row in await fetch(settings, "SELECT status FROM tasks"))
    assert statuses == Counter(complete=len(events)), f"expected every task complete, got {dict(statuses)}"


# A database that comes back read-only ----------------------------------------------------------

READ_ONLY_S = 10.0


async def test_read_only_database_loses_no_events(settings: Settings, tmp_path: Path, postgres_admin_dsn: str) -> None:
    """After a failover, connections can land on a server still in read-only mode.

    Writes then fail with SQLSTATE 25006 (read_only_sql_transaction) rather than a
    connection error. The events that arrive meanwhile must wait for a writable database,
    not go to the dead-letter topic as bad data.
    """
    log_path = tmp_path / "service.log"
    await prepare(settings, [("user_deleted", "echo")])
    database = database_name(settings)
    events = [exh_event(f"user-{number:03d}") for number in range(60)]
    sent: list[Any] = []

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        async with TopicReader(settings, settings.dead_letter_topic) as dead_letters:
            with ServiceProcess(settings, log_path=log_path) as service:
                await wait_for_log(log_path, "partitions assigned", timeout=30)
                await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
                try:
                    await terminate_service_backends(admin, database)
                    await publish_paced(settings, exh_topic(settings), events, chunk=6, interval_s=0.5, sent=sent)
                    await asyncio.sleep(max(READ_ONLY_S - 5.0, 0))
                    exited_while_read_only = service.process.poll() if service.process else None
                finally:
                    await admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
                    await terminate_service_backends(admin, database)

                async def settled() -> bool:
                    rows = await fetch(settings, "SELECT count(DISTINCT event_id) AS n FROM tasks")
                    return rows[0]["n"] == len(events) and await nothing_pending(settings)

                if exited_while_read_only is None:
                    await wait_for(settled, timeout=60, message="a task row per event once the database is writable")
                    await wait_for(dead_letters.caught_up, timeout=30, message="the dead-letter topic read")
                exit_code = service.process.poll() if service.process else None
    finally:
        await admin.close()

    assert exited_while_read_only is None, \
        f"the service exited with {exited_while_read_only} while the database was read-only: {_first_error(log_path)}"
    assert exit_code is None, f"the service exited with {exit_code} after the database became writable"
    dead_lettered = [dict(record.headers).get("reason") for record in dead_letters.records]
    assert dead_lettered == [], f"{len(dead_lettered)} valid events went to the dead-letter topic: {dead_lettered[:3]}"
    await _check_one_task_per_event(settings, events)
