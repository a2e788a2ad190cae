"""Fixtures for the real PostgreSQL server and Kafka-protocol broker.

Servers come from the settings when given (DATABASE_URL or TASKSERVICE_TEST_DATABASE_URL,
KAFKA_BOOTSTRAP_SERVERS). Otherwise, where a Docker engine responds, testcontainers starts
PostgreSQL and Apache Kafka; elsewhere a Tansu broker is started and the local PostgreSQL
on 127.0.0.1:5432 is used. A fixture that cannot get a server fails the run under CI
(CI=true) and skips the test elsewhere, with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from taskservice.config import Settings
from taskservice.embedded.services import EmbeddedBroker
from taskservice.store.migrate import migrate

TESTS_DIR = Path(__file__).resolve().parent
TEST_FUNCTIONS_DIR = TESTS_DIR / "functions"
LOCAL_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required server unavailable under CI: {reason}")
    pytest.skip(reason)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[tuple[str, bool]]:
    """Return (bootstrap servers, whether the broker is Tansu)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, os.environ.get("TASKSERVICE_TEST_BROKER") == "tansu"
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server(), False
        return
    broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="taskservice-test-broker-")))
    try:
        broker.start()
    except Exception as exc:  # noqa: BLE001 - reported through skip or fail
        _unavailable(f"cannot start the Tansu broker: {exc}")
    try:
        yield broker.bootstrap_servers, True
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """Return a DSN of a database on a server where the tests may create databases."""
    configured = os.environ.get("TASKSERVICE_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16") as container:
            yield container.get_connection_url().replace("+psycopg2", "")
        return
    yield LOCAL_POSTGRES_DSN


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
async def template_database(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """Create a migrated template database once per run; return its name."""
    name = f"taskservice_template_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(postgres_admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        _unavailable(f"cannot connect to PostgreSQL at {postgres_admin_dsn}: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await migrate(_with_database(postgres_admin_dsn, name))
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database_url(postgres_admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """Return the DSN of a fresh migrated database, dropped after the test."""
    name = f"taskservice_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield _with_database(postgres_admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def settings(database_url: str, kafka_bootstrap: tuple[str, bool], tmp_path: Path) -> Settings:
    """Settings with topics, group and state folder private to this test."""
    bootstrap, is_tansu = kafka_bootstrap
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_enable_idempotence=not is_tansu,
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
        kafka_fetch_max_wait_ms=5,
        topics={f"exh-events-{suffix}": "exh", f"document-changes-{suffix}": "cloudevents"},
        results_topic=f"task-results-{suffix}",
        dead_letter_topic=f"dead-letter-{suffix}",
        consumer_group=f"ingest-{suffix}",
        state_dir=tmp_path / "state",
        functions_dir=TEST_FUNCTIONS_DIR,
        http_port=0,
        worker_poll_interval_s=0.5,
        relay_poll_interval_s=0.5,
        log_format="text",
    )
