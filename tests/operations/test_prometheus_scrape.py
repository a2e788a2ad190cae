"""Real Prometheus scrapes a running service; every dashboard, alert and autoscaling query must return data.

The service runs as a child process with every role and its HTTP port on 127.0.0.1.
The test drives each path that a query reads. It publishes matched events, a poison
record and events of a function that fails until its retries run out. It adds a schedule
that missed fire times and a task whose worker is gone (recovered by the lease sweep),
sends an HTTP API request and cuts the database off for a moment. Prometheus (Debian's package) scrapes every second and loads the alert
rules, then each query is evaluated through its HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskservice.config import Settings
from taskservice.embedded.services import free_loopback_port
from taskservice.ids import new_object_id
from taskservice.scheduler.definition import build_schedule
from taskservice.store.db import create_pool
from taskservice.store.schedule_repository import ScheduleRepository
from tests.operations.common import (
    ALERT_RULES, DASHBOARDS, alert_expressions, autoscaling_queries, dashboard_queries, database_unreachable,
    exposed_families, grafana_to_promql, http_get, metric_names, require_tool, with_bool_comparisons,
)
from tests.support import ServiceProcess, exh_event, fetch, prepare, publish, wait_for

ROLES = "ingest,worker,relay,scheduler,http"
EVENTS = 20
FAILING_EVENTS = 3
SCRAPES_AFTER_WORKLOAD_S = 4.0


@pytest.fixture
def service_port() -> int:
    """Return the loopback port of the service's HTTP server."""
    return free_loopback_port()


@pytest.fixture
def prometheus(tmp_path: Path, service_port: int) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start Prometheus on a free loopback port, scraping the service's port every second."""
    binary = require_tool("prometheus")
    port = free_loopback_port()
    config = tmp_path / "prometheus.yml"
    log_path = tmp_path / "prometheus.log"
    config.write_text(_scrape_config(service_port))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _scrape_config(service_port: int) -> str:
    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [{"job_name": "taskservice",
                            "static_configs": [{"targets": [f"127.0.0.1:{service_port}"],
                                                "labels": {"component": "all"}}]}],
    })


async def _prometheus_api(port: int, path: str) -> dict[str, Any]:
    status, body = await http_get(port, path, timeout=10.0)
    assert status == 200, f"Prometheus answered {status} to {path}: {body[:500]}"
    return json.loads(body)


async def _query(port: int, expression: str) -> list[Any]:
    answer = await _prometheus_api(port, "/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
    assert answer["status"] == "success", f"query {expression!r} failed: {answer}"
    return answer["data"]["result"]


async def _wait_for_prometheus(prometheus: tuple[subprocess.Popen[bytes], int]) -> int:
    process, port = prometheus

    async def ready() -> bool:
        assert process.poll() is None, f"Prometheus exited with {process.returncode}; see prometheus.log"
        status, _body = await http_get(port, "/-/ready")
        return status == 200

    await wait_for(ready, timeout=30, message="Prometheus ready")
    return port


async def _add_schedule_with_missed_fires(settings: Settings) -> None:
    """Add a 1 s interval schedule as if created 30 s ago, so the first pass misses fire times."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="test")
    try:
        created_at = datetime.now(UTC) - timedelta(seconds=30)
        row = build_schedule("echo", interval_s=1, now=created_at, start_timestamp=created_at, catch_up="latest")
        await ScheduleRepository(pool).insert_schedule(row)
    finally:
        await pool.close()


async def _add_orphaned_task(settings: Settings) -> str:
    """Insert a running task whose worker is gone (lease expired), as a killed worker leaves it."""
    task_id = new_object_id()
    await fetch(settings, """
        INSERT INTO tasks (id, function_name, status, source, attempt, worker_id, lease_expires_at,
                           started_timestamp, idempotency_key)
        VALUES ($1, 'echo', 'inProgress', 'api', 1, 'worker-that-stopped', now() - interval '1 second',
                now() - interval '10 seconds', 'test:' || $1)""", task_id)
    return task_id


async def _run_workload(settings: Settings, service_port: int, postgres_admin_dsn: str) -> None:
    topic = next(topic for topic, fmt in settings.topics.items() if fmt == "exh")
    events = [exh_event(f"user-{n}", "user_deleted") for n in range(EVENTS)]
    failing = [exh_event(f"fail-{n}", "user_failed") for n in range(FAILING_EVENTS)]
    await publish(settings, topic, [*events, b"{not json", *failing])
    await _add_schedule_with_missed_fires(settings)
    orphan = await _add_orphaned_task(settings)
    status, _body = await http_get(service_port, "/tasks/v1/")
    assert status == 401, f"the API answered {status} to an unauthenticated task list"

    async def settled() -> bool:
        rows = await fetch(settings, """
            SELECT count(*) FILTER (WHERE source = 'event' AND status = 'complete') AS complete,
                   count(*) FILTER (WHERE function_name = 'fail-retry' AND status = 'failed') AS failed,
                   count(*) FILTER (WHERE source = 'schedule') AS scheduled,
                   count(*) FILTER (WHERE id = $1 AND status <> 'inProgress') AS recovered
            FROM tasks""", orphan)
        row = rows[0]
        return (row["complete"] == EVENTS and row["failed"] == FAILING_EVENTS and row["scheduled"] >= 2
                and row["recovered"] == 1)

    await wait_for(settled, timeout=40, message="events, retries, schedule fires and the sweep to finish")

    # A short outage of the test's own database, so that the database error counters and
    # the dependency gauge have samples.
    async def not_ready() -> bool:
        status, _body = await http_get(service_port, "/health/ready")
        return status == 503

    async def ready() -> bool:
        status, _body = await http_get(service_port, "/health/ready")
        return status == 200

    async with database_unreachable(postgres_admin_dsn, settings):
        await wait_for(not_ready, timeout=15, message="readiness 503 while the database is unreachable")
    await wait_for(ready, timeout=30, message="readiness 200 after the database came back")


async def test_every_query_returns_data(settings: Settings, tmp_path: Path, postgres_admin_dsn: str,
                                        service_port: int, prometheus: tuple[subprocess.Popen[bytes], int]) -> None:
    settings = settings.model_copy(update={
        "http_port": service_port, "metrics_sample_interval_s": 1.0, "sweep_interval_s": 1.0,
        "scheduler_tick_s": 1.0, "lease_s": 5.0, "heartbeat_interval_s": 1.0,
    })
    await prepare(settings, [("user_deleted", "echo"), ("user_failed", "fail-retry")])
    log_path = tmp_path / "service.log"
    started = time.monotonic()

    with ServiceProcess(settings, roles=ROLES, log_path=log_path) as service:
        async def ready() -> bool:
            assert service.process is not None and service.process.poll() is None, \
                f"the service exited; see {log_path}"
            status, _body = await http_get(service_port, "/health/ready")
            return status == 200

        await wait_for(ready, timeout=30, message="the service ready")
        prometheus_port = await _wait_for_prometheus(prometheus)
        await _run_workload(settings, service_port, postgres_admin_dsn)
        await asyncio.sleep(SCRAPES_AFTER_WORKLOAD_S)

        live_status, _body = await http_get(service_port, "/health/live")
        _status, exposition = await http_get(service_port, "/metrics")
        queries = [*((where, grafana_to_promql(expr)) for path in DASHBOARDS for where, expr in dashboard_queries(path)),
                   *((f"alert {name}", with_bool_comparisons(expr)) for name, expr in alert_expressions()),
                   *autoscaling_queries()]
        empty = [f"{where}: {expr}" for where, expr in queries if not await _query(prometheus_port, expr)]
        rules = (await _prometheus_api(prometheus_port, "/api/v1/rules"))["data"]["groups"]
        targets = (await _prometheus_api(prometheus_port, "/api/v1/targets"))["data"]["activeTargets"]
        assert service.terminate(timeout=60) == 0, f"the service did not stop cleanly; see {log_path}"

    assert live_status == 200, "liveness failed on a service that works"
    assert [target["health"] for target in targets] == ["up"], f"scrape targets: {targets}"
    missing = sorted({name for _where, expr in queries for name in metric_names(expr)} - exposed_families(exposition))
    assert not missing, f"queries read metrics the service does not export: {missing}"
    assert len(queries) > 40, f"only {len(queries)} queries were found in the dashboards and rules"
    assert not empty, "queries without data:\n" + "\n".join(empty)
    unhealthy = [(rule["name"], rule.get("lastError")) for group in rules for rule in group["rules"]
                 if rule["health"] != "ok"]
    assert not unhealthy, f"Prometheus failed to evaluate rules: {unhealthy}"
    assert time.monotonic() - started < 90, f"the test took {time.monotonic() - started:.0f} s"
