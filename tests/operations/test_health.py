"""Liveness and readiness: the stall rule, the database check, and the endpoints of every role."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import ValidationError

from taskservice.api.operations import bind_socket
from taskservice.config import Settings
from taskservice.embedded.services import free_loopback_port
from taskservice.health import Health
from taskservice.service import Service
from tests.operations.common import database_unreachable, exposed_families, http_get
from tests.support import running_service, wait_for

STALL_S = 0.2
PAST_STALL_S = 0.5


async def test_role_stalls_past_timeout() -> None:
    health = Health(stall_timeout_s=STALL_S)
    health.watch("ingest")
    health.watch("worker")
    assert health.live

    await asyncio.sleep(PAST_STALL_S)
    health.mark_progress("worker")
    assert health.stalled_roles() == ["ingest"]
    assert not health.live

    health.mark_progress("ingest")
    assert health.live


async def test_stall_clock_held_while_database_unreachable() -> None:
    health = Health(stall_timeout_s=STALL_S)
    health.watch("ingest")
    health.database_ok = False
    await asyncio.sleep(PAST_STALL_S)
    assert health.live, "a loop waiting for an unreachable database counts as stalled"
    assert not health.ready

    # The clock starts again when the database is back, with the full timeout.
    health.database_ok = True
    assert health.live and health.ready
    await asyncio.sleep(PAST_STALL_S)
    assert health.stalled_roles() == ["ingest"]


async def test_unwatched_role_never_stalls() -> None:
    health = Health(stall_timeout_s=STALL_S)
    health.watch("relay")
    health.unwatch_all()
    await asyncio.sleep(PAST_STALL_S)
    assert health.live


def test_service_takes_stall_timeout_from_settings(settings: Settings) -> None:
    service = Service(settings.model_copy(update={"health_stall_timeout_s": 123.0}), ("worker",))
    assert service.health.stall_timeout_s == 123.0


def test_stall_timeout_must_exceed_loop_waits() -> None:
    with pytest.raises(ValidationError, match=r"health_stall_timeout_s \(30.0\) must be more than twice "
                                              r"sweep_interval_s \(20.0\)"):
        Settings(health_stall_timeout_s=30.0, sweep_interval_s=20.0)
    with pytest.raises(ValidationError, match="metrics_sample_interval_s"):
        Settings(metrics_sample_interval_s=0)


async def test_readiness_follows_database(settings: Settings, postgres_admin_dsn: str) -> None:
    port = free_loopback_port()
    settings = settings.model_copy(update={"http_port": port})
    async with running_service(settings, ("worker", "sweeper")):
        await wait_for(lambda: _answers(port, "/health/ready", 200), timeout=20, message="readiness 200 at start")
        async with database_unreachable(postgres_admin_dsn, settings):
            await wait_for(lambda: _answers(port, "/health/ready", 503), timeout=15,
                           message="readiness 503 while the database is unreachable")
            assert await _answers(port, "/health/live", 200), "liveness failed during a database outage"
            _code, exposition = await http_get(port, "/metrics")
            assert 'taskservice_dependency_reachable{dependency="database"} 0.0' in exposition
        await wait_for(lambda: _answers(port, "/health/ready", 200), timeout=30,
                       message="readiness 200 after the database came back")
        assert await _answers(port, "/health/live", 200)


async def test_every_role_serves_operations_endpoints(settings: Settings) -> None:
    port = free_loopback_port()
    settings = settings.model_copy(update={"http_port": port})
    async with running_service(settings, ("relay",)):
        await wait_for(lambda: _answers(port, "/health/live", 200), timeout=20,
                       message="/health/live of a relay-only process")
        code, exposition = await http_get(port, "/metrics")
        assert code == 200
        assert "taskservice_role_running" in exposed_families(exposition)
        assert 'taskservice_role_running{role="relay"} 1.0' in exposition
        api_code, _body = await http_get(port, "/tasks/v1/")
        assert api_code == 404, "a process without the http role must not serve the API"


async def test_port_in_use_keeps_roles_running(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    holder = bind_socket("127.0.0.1", 0)
    port = holder.getsockname()[1]
    settings = settings.model_copy(update={"http_port": port})
    caplog.set_level(logging.INFO, logger="taskservice")
    try:
        async with running_service(settings, ("relay",)) as service:
            async def relay_started() -> bool:
                return any(record.__dict__.get("event") == "relay_started" for record in caplog.records)

            await wait_for(relay_started, timeout=20, message="the relay to start")
            await asyncio.sleep(1.0)
            assert not service.stopping.is_set(), "the service stopped because its metrics port was taken"
    finally:
        holder.close()
    failures = [record for record in caplog.records if record.__dict__.get("event") == "operations_http_failed"]
    assert len(failures) == 1, "a taken port must be logged once"
    assert failures[0].levelname == "ERROR"


async def _answers(port: int, path: str, expected: int) -> bool:
    status, _body = await http_get(port, path)
    return status == expected
