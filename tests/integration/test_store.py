"""Migrations and the guarded task status transitions, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from taskservice.config import Settings
from taskservice.ids import new_object_id
from taskservice.store.db import create_pool
from taskservice.store.migrate import apply_migrations, load_migrations, migrate
from taskservice.store.repository import Repository, encode_json_rows


@pytest.fixture
async def empty_database(postgres_admin_dsn: str) -> str:
    name = f"taskservice_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin_dsn.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_concurrent_migrations_apply_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(4)))
    versions = [migration.version for migration in load_migrations()]
    applied = sorted(version for result in results for version in result)
    assert applied == versions
    connection = await asyncpg.connect(empty_database)
    try:
        rows = await connection.fetch("SELECT version FROM taskservice_migrations ORDER BY version")
        assert [row["version"] for row in rows] == versions
        assert await apply_migrations(connection) == []
    finally:
        await connection.close()


@pytest.fixture
async def repository(settings: Settings) -> Repository:
    pool = await create_pool(settings.database_url, size=4, role="test")
    yield Repository(pool)
    await pool.close()


def _row(key: str, **overrides: object) -> dict:
    row = {"id": new_object_id(), "function_name": "echo", "data": {"k": key}, "tags": ["a"], "priority": None,
           "start_timestamp": None, "idempotency_key": key, "source": "event", "event_id": key,
           "event_timestamp": None}
    row.update(overrides)
    return row


async def test_insert_skips_existing_keys(repository: Repository) -> None:
    first = await repository.insert_tasks([_row("k1"), _row("k2")])
    second = await repository.insert_tasks([_row("k2"), _row("k3")])
    assert sorted(row["idempotency_key"] for row in first) == ["k1", "k2"]
    assert [row["idempotency_key"] for row in second] == ["k3"]
    assert (await repository.count_tasks_by_status()) == {"new": 3}


async def test_claim_order_priority_then_start(repository: Repository) -> None:
    await repository.insert_tasks([
        _row("low-early", priority=0, start_timestamp="2020-01-01T00:00:00Z"),
        _row("high-late", priority=5, start_timestamp="2020-01-03T00:00:00Z"),
        _row("low-late", priority=0, start_timestamp="2020-01-02T00:00:00Z"),
        _row("future", priority=9, start_timestamp="2999-01-01T00:00:00Z"),
    ])
    claimed = await repository.claim_tasks(10, "w1", 30)
    assert [row["data"] for row in claimed] == ['{"k": "high-late"}', '{"k": "low-early"}', '{"k": "low-late"}']
    assert all(row["attempt"] == 1 for row in claimed)
    assert await repository.claim_tasks(10, "w2", 30) == []


async def test_concurrent_claims_never_overlap(repository: Repository) -> None:
    await repository.insert_tasks([_row(f"k{i}") for i in range(300)])
    batches = await asyncio.gather(*(repository.claim_tasks(40, f"w{i}", 30) for i in range(10)))
    ids = [row["id"] for batch in batches for row in batch]
    assert len(ids) == 300
    assert len(set(ids)) == 300


async def test_finish_requires_in_progress_and_attempt(repository: Repository, settings: Settings) -> None:
    created = await repository.insert_tasks([_row("k1")])
    task_id = created[0]["id"]
    outcome = {"id": task_id, "attempt": 1, "status": "complete", "result": {"ok": True}, "error": None,
               "started_timestamp": "2027-01-01T00:00:00Z", "finished_timestamp": "2027-01-01T00:00:01Z",
               "logs": [["2027-01-01T00:00:00Z", "line one"]]}
    assert await repository.finish_tasks([outcome], settings.results_topic) == []  # still new
    await repository.claim_tasks(1, "w1", 30)
    assert await repository.finish_tasks([outcome | {"attempt": 2}], settings.results_topic) == []
    finished = await repository.finish_tasks([outcome], settings.results_topic)
    assert [row["status"] for row in finished] == ["complete"]
    assert await repository.finish_tasks([outcome | {"status": "failed"}], settings.results_topic) == []
    assert await repository.count_unsent_outbox() == 1


async def test_expired_lease_fails_task_once(repository: Repository, settings: Settings) -> None:
    from taskservice.health import Health
    from taskservice.workers.sweeper import LeaseSweeper

    await repository.insert_tasks([_row("k1")])
    claimed = await repository.claim_tasks(1, "w1", 0.001)
    await asyncio.sleep(0.05)
    sweeper = LeaseSweeper(settings, repository, Health())
    assert await sweeper.sweep_once() == 1
    assert await sweeper.sweep_once() == 0
    late = {"id": claimed[0]["id"], "attempt": 1, "status": "complete", "result": None, "error": None,
            "started_timestamp": "2027-01-01T00:00:00Z", "finished_timestamp": "2027-01-01T00:00:01Z", "logs": []}
    assert await repository.finish_tasks([late], settings.results_topic) == []
    assert await repository.renew_leases([claimed[0]["id"]], "w1", 30) == []
    outbox = await repository.pool.fetch("SELECT topic, payload->>'type' AS type FROM outbox")
    by_topic = {row["topic"]: row["type"] for row in outbox}
    assert len(outbox) == 2
    assert by_topic[settings.task_failed_events_topic] == "task_failed"
    assert settings.results_topic in by_topic
    rows = await repository.pool.fetch("SELECT status, error->>'name' AS error FROM tasks")
    assert [(row["status"], row["error"]) for row in rows] == [("failed", "zombieTaskCleaned")]


async def test_release_returns_task_to_queue(repository: Repository) -> None:
    await repository.insert_tasks([_row("k1")])
    claimed = await repository.claim_tasks(1, "w1", 30)
    assert await repository.release_tasks([claimed[0]["id"]], "other-worker") == []
    assert await repository.release_tasks([claimed[0]["id"]], "w1") == [claimed[0]["id"]]
    again = await repository.claim_tasks(1, "w2", 30)
    assert again[0]["attempt"] == 1


def test_nul_characters_are_replaced() -> None:
    encoded = encode_json_rows([{"text": "a\x00b", "escaped": "\\u0000"}])
    assert "\\u0000" not in encoded.replace("\\\\u0000", "")
    assert "\\ufffd" in encoded
    assert "\\\\u0000" in encoded


async def test_nul_in_task_data_is_stored(repository: Repository) -> None:
    await repository.insert_tasks([_row("k1", data={"text": "a\x00b"})])
    claimed = await repository.claim_tasks(1, "w1", 30)
    assert claimed[0]["data"] == '{"text": "a\ufffdb"}'
