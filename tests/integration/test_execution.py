"""Execution semantics: retries, limits, ordering, delays, isolation and shutdown."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from taskservice.config import Settings
from taskservice.ids import new_object_id
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository
from tests.support import TopicReader, fetch, prepare, running_service, set_function_env, wait_for


async def create_tasks(settings: Settings, function: str, count: int, **fields: Any) -> list[str]:
    """Insert tasks as an API caller would; return their ids in creation order."""
    rows = []
    for index in range(count):
        task_id = new_object_id()
        row = {"id": task_id, "function_name": function, "data": fields.get("data", {"index": index}),
               "tags": [], "priority": fields.get("priority"), "start_timestamp": fields.get("start_timestamp"),
               "idempotency_key": None, "source": "api", "event_id": None, "event_timestamp": None,
               "concurrency_key": fields.get("concurrency_key")}
        rows.append(row)
    pool = await create_pool(settings.database_url, size=2, role="test")
    try:
        await Repository(pool).insert_tasks(rows)
    finally:
        await pool.close()
    return [row["id"] for row in rows]


async def tasks_by_id(settings: Settings) -> dict[str, Any]:
    rows = await fetch(settings, "SELECT * FROM tasks")
    return {row["id"]: row for row in rows}


def all_final(settings: Settings, expected: int):
    async def check() -> bool:
        rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE status NOT IN ('new', 'inProgress')")
        return rows[0]["n"] >= expected
    return check


def read_invocations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_retry_chain_links_both_ways(settings: Settings) -> None:
    await prepare(settings)
    exh_topic = settings.task_failed_events_topic
    async with TopicReader(settings, settings.results_topic) as results, \
            TopicReader(settings, exh_topic) as events, running_service(settings, ("worker", "relay")):
        [first] = await create_tasks(settings, "fail-retry", 1)
        await wait_for(all_final(settings, 3), timeout=30, message="three runs")
        await wait_for(lambda: _has(results, 3), timeout=30, message="three results")
        await wait_for(lambda: _has(events, 1), timeout=30, message="task_failed event")

    tasks = await tasks_by_id(settings)
    chain = sorted(tasks.values(), key=lambda row: row["attempt"])
    assert [row["status"] for row in chain] == ["retried", "retried", "failed"]
    assert [row["attempt"] for row in chain] == [1, 2, 3]
    assert chain[0]["id"] == first
    assert chain[0]["retried_by_task_id"] == chain[1]["id"]
    assert chain[1]["retried_by_task_id"] == chain[2]["id"]
    assert chain[2]["retried_by_task_id"] is None
    assert list(chain[1]["retry_for_task_ids"]) == [chain[0]["id"]]
    assert list(chain[2]["retry_for_task_ids"]) == [chain[0]["id"], chain[1]["id"]]
    for previous, retry, delay in ((chain[0], chain[1], 0.3), (chain[1], chain[2], 0.6)):
        assert retry["start_timestamp"] - previous["finished_timestamp"] >= timedelta(seconds=delay)
        assert retry["started_timestamp"] >= retry["start_timestamp"]
    assert all(orjson.loads(row["error"])["name"] == "RuntimeError" if isinstance(row["error"], str)
               else row["error"]["name"] == "RuntimeError" for row in chain)

    statuses = sorted(message["status"] for message in results.json_values())
    assert statuses == ["failed", "retried", "retried"]
    failed_events = [event for event in events.json_values() if event["type"] == "task_failed"]
    assert len(failed_events) == 1
    assert failed_events[0]["content"]["id"] == chain[2]["id"]
    assert failed_events[0]["content"]["functionName"] == "fail-retry"
    assert failed_events[0]["content"]["error"]["name"] == "RuntimeError"


async def test_exh_delay_and_error_filter(settings: Settings) -> None:
    await prepare(settings)
    async with running_service(settings, ("worker", "relay")):
        await create_tasks(settings, "fail-exh-retry", 1)
        await create_tasks(settings, "fail-not-retried", 1)
        await wait_for(all_final(settings, 3), timeout=30, message="runs to finish")
    tasks = sorted((await tasks_by_id(settings)).values(), key=lambda row: (row["function_name"], row["attempt"]))
    assert [(row["function_name"], row["status"]) for row in tasks] == [
        ("fail-exh-retry", "retried"), ("fail-exh-retry", "failed"), ("fail-not-retried", "failed")]
    gap = tasks[1]["start_timestamp"] - tasks[0]["finished_timestamp"]
    assert timedelta(seconds=2) <= gap < timedelta(seconds=2.5)


async def test_concurrency_key_runs_in_order(settings: Settings, tmp_path: Path) -> None:
    await prepare(settings)
    log = tmp_path / "invocations.jsonl"
    await set_function_env(settings, "sleep", "INVOCATION_LOG", str(log))
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "0.2")
    keyed = await create_tasks(settings, "sleep", 5, concurrency_key="user-1")
    await create_tasks(settings, "sleep", 3, concurrency_key="user-2")
    async with running_service(settings, ("worker",)):
        await wait_for(all_final(settings, 8), timeout=30, message="eight tasks")
    runs = {run["task_id"]: run for run in read_invocations(log)}
    assert len(runs) == 8
    ordered = [runs[task_id] for task_id in keyed]
    for earlier, later in zip(ordered, ordered[1:]):
        assert later["started"] >= earlier["finished"], "tasks with one key overlapped or ran out of order"


async def test_function_limit_caps_overlap(settings: Settings, tmp_path: Path) -> None:
    await prepare(settings)
    log = tmp_path / "invocations.jsonl"
    await set_function_env(settings, "limited", "INVOCATION_LOG", str(log))
    await create_tasks(settings, "limited", 8)
    quick = settings.model_copy(update={"runtime_processes_per_function": 4, "worker_claim_batch_size": 1})
    async with running_service(quick, ("worker",)):
        await wait_for(all_final(settings, 8), timeout=30, message="eight tasks")
    runs = read_invocations(log)
    assert len(runs) == 8
    assert _max_overlap(runs) <= 2


async def test_global_limit_caps_overlap(settings: Settings, tmp_path: Path) -> None:
    await prepare(settings)
    log = tmp_path / "invocations.jsonl"
    await set_function_env(settings, "sleep", "INVOCATION_LOG", str(log))
    await set_function_env(settings, "echo", "INVOCATION_LOG", str(log))
    await create_tasks(settings, "sleep", 4)
    await create_tasks(settings, "echo", 4)
    limited = settings.model_copy(update={"max_running_tasks": 1, "runtime_processes_per_function": 4})
    async with running_service(limited, ("worker",)):
        await wait_for(all_final(settings, 8), timeout=30, message="eight tasks")
    runs = read_invocations(log)
    assert len(runs) == 8
    assert _max_overlap(runs) == 1


async def test_priority_then_start_order(settings: Settings, tmp_path: Path) -> None:
    await prepare(settings)
    log = tmp_path / "invocations.jsonl"
    await set_function_env(settings, "echo", "INVOCATION_LOG", str(log))
    past = datetime.now(UTC) - timedelta(minutes=5)
    low_early = await create_tasks(settings, "echo", 1, priority=0, start_timestamp=past.isoformat())
    high = await create_tasks(settings, "echo", 1, priority=10)
    low_late = await create_tasks(settings, "echo", 1, priority=0)
    middle = await create_tasks(settings, "echo", 1, priority=5)
    one_at_a_time = settings.model_copy(update={"worker_claim_batch_size": 1, "worker_max_in_flight": 1})
    async with running_service(one_at_a_time, ("worker",)):
        await wait_for(all_final(settings, 4), timeout=30, message="four tasks")
    order = [run["task_id"] for run in sorted(read_invocations(log), key=lambda run: run["started"])]
    assert order == [*high, *middle, *low_early, *low_late]


async def test_delayed_task_starts_on_time(settings: Settings) -> None:
    await prepare(settings)
    async with running_service(settings, ("worker",)):
        await wait_for(lambda: _worker_connected(settings), timeout=10, message="worker ready")
        start = datetime.now(UTC) + timedelta(seconds=1.5)
        [task_id] = await create_tasks(settings, "echo", 1, start_timestamp=start.isoformat())
        await wait_for(all_final(settings, 1), timeout=10, message="delayed task")
    task = (await tasks_by_id(settings))[task_id]
    assert task["status"] == "complete"
    assert task["started_timestamp"] >= task["start_timestamp"]
    assert task["started_timestamp"] - task["start_timestamp"] < timedelta(milliseconds=500)


async def test_time_limit_fails_task(settings: Settings) -> None:
    await prepare(settings)
    async with running_service(settings, ("worker",)):
        [slow] = await create_tasks(settings, "slow", 1)
        [quick] = await create_tasks(settings, "echo", 1)
        await wait_for(all_final(settings, 2), timeout=20, message="two tasks")
    tasks = await tasks_by_id(settings)
    error = _error(tasks[slow])
    assert tasks[slow]["status"] == "failed"
    assert error["name"] == "Runtime.Timeout"
    assert "3" in error["message"]
    assert tasks[quick]["status"] == "complete"


async def test_memory_limit_fails_task(settings: Settings) -> None:
    await prepare(settings)
    async with running_service(settings, ("worker",)):
        [hog] = await create_tasks(settings, "hog", 1, data={"megabytes": 400})
        [small] = await create_tasks(settings, "hog", 1, data={"megabytes": 8})
        await wait_for(all_final(settings, 2), timeout=20, message="two tasks")
    tasks = await tasks_by_id(settings)
    assert tasks[hog]["status"] == "failed"
    assert _error(tasks[hog])["name"] == "Runtime.OutOfMemory"
    assert tasks[small]["status"] == "complete"


async def test_function_sees_only_its_environment(settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@127.0.0.1/never")
    monkeypatch.setenv("TASKSERVICE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    await prepare(settings)
    async with running_service(settings, ("worker",)):
        [task_id] = await create_tasks(settings, "env-probe", 1)
        await wait_for(all_final(settings, 1), timeout=20, message="probe")
    result = _json((await tasks_by_id(settings))[task_id]["result"])
    assert result["probe"] == "visible"
    assert "DATABASE_URL" not in result["names"]
    assert not [name for name in result["names"] if name.startswith("TASKSERVICE_")]
    assert os.environ["DATABASE_URL"].startswith("postgresql://secret")


async def test_result_and_log_limits(settings: Settings) -> None:
    await prepare(settings)
    small = settings.model_copy(update={"max_result_bytes": 10_000, "max_log_bytes": 4_096})
    async with running_service(small, ("worker",)):
        [too_big] = await create_tasks(small, "big-output", 1, data={"resultBytes": 50_000})
        [chatty] = await create_tasks(small, "big-output", 1, data={"logLines": 500, "resultBytes": 10})
        [odd_text] = await create_tasks(small, "big-output", 1, data={"text": "nul\u0000here"})
        await wait_for(all_final(settings, 3), timeout=20, message="three tasks")
    tasks = await tasks_by_id(settings)
    assert tasks[too_big]["status"] == "failed"
    assert _error(tasks[too_big])["name"] == "Runtime.ResultTooLarge"
    assert tasks[chatty]["status"] == "complete"
    lines = await fetch(settings, "SELECT message FROM task_logs WHERE task_id = $1 ORDER BY line_number", chatty)
    assert sum(len(row["message"]) for row in lines) < 8_000
    assert "dropped" in lines[-1]["message"].lower()
    assert tasks[odd_text]["status"] == "complete"
    assert _json(tasks[odd_text]["result"]) == {"text": "nul\ufffdhere"}


async def test_cancel_new_task_never_runs(settings: Settings) -> None:
    await prepare(settings)
    later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    [task_id] = await create_tasks(settings, "echo", 1, start_timestamp=later)
    pool = await create_pool(settings.database_url, size=2, role="test")
    try:
        repository = Repository(pool)
        outcome = await repository.cancel_task(task_id, include_running=True)
        assert (outcome["previous_status"], outcome["status"]) == ("new", "canceled")
        again = await repository.cancel_task(task_id, include_running=True)
        assert (again["previous_status"], again["status"]) == ("canceled", None)
        assert await repository.cancel_task("0" * 24, include_running=True) is None
    finally:
        await pool.close()
    async with running_service(settings, ("worker",)):
        await wait_for(lambda: _worker_connected(settings), timeout=10, message="worker connected")
        await _sleep(3)
    task = (await tasks_by_id(settings))[task_id]
    assert task["status"] == "canceled"
    assert task["attempt"] == 0


async def test_graceful_shutdown_finishes_running(settings: Settings) -> None:
    await prepare(settings)
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "1.5")
    async with running_service(settings, ("worker",)):
        [task_id] = await create_tasks(settings, "sleep", 1)
        await wait_for(lambda: _status_is(settings, task_id, "inProgress"), timeout=10, message="task started")
    task = (await tasks_by_id(settings))[task_id]
    assert task["status"] == "complete"


async def test_shutdown_grace_releases_unfinished(settings: Settings) -> None:
    await prepare(settings)
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "20")
    impatient = settings.model_copy(update={"shutdown_grace_s": 0.5})
    async with running_service(impatient, ("worker",)):
        [task_id] = await create_tasks(settings, "sleep", 1)
        await wait_for(lambda: _status_is(settings, task_id, "inProgress"), timeout=10, message="task started")
    task = (await tasks_by_id(settings))[task_id]
    assert task["status"] == "new"
    assert task["attempt"] == 0
    assert task["worker_id"] is None


def _max_overlap(runs: list[dict[str, Any]]) -> int:
    points = sorted([(run["started"], 1) for run in runs] + [(run["finished"], -1) for run in runs])
    current = highest = 0
    for _, change in points:
        current += change
        highest = max(highest, current)
    return highest


def _error(row: Any) -> dict[str, Any]:
    return _json(row["error"])


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


async def _has(reader: TopicReader, count: int) -> bool:
    return len(reader.records) >= count


async def _status_is(settings: Settings, task_id: str, status: str) -> bool:
    rows = await fetch(settings, "SELECT status FROM tasks WHERE id = $1", task_id)
    return bool(rows) and rows[0]["status"] == status


async def _worker_connected(settings: Settings) -> bool:
    rows = await fetch(settings, "SELECT count(*) AS n FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'taskservice-%' AND datname = current_database()")
    return rows[0]["n"] > 0


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_cancel_running_task_interrupts_it(settings: Settings) -> None:
    await prepare(settings)
    await set_function_env(settings, "sleep", "SLEEP_SECONDS", "30")
    async with TopicReader(settings, settings.results_topic) as results, running_service(settings, ("worker", "relay")):
        [task_id] = await create_tasks(settings, "sleep", 1)
        await wait_for(lambda: _status_is(settings, task_id, "inProgress"), timeout=10, message="task started")
        pool = await create_pool(settings.database_url, size=2, role="test")
        try:
            outcome = await Repository(pool).cancel_task(task_id, include_running=True)
        finally:
            await pool.close()
        assert (outcome["previous_status"], outcome["status"]) == ("inProgress", "inProgress")
        cancelled_at = time.monotonic()
        await wait_for(lambda: _status_is(settings, task_id, "canceled"), timeout=10, message="task canceled")
        assert time.monotonic() - cancelled_at < 5
        await wait_for(lambda: _has(results, 1), timeout=10, message="result message")
    task = (await tasks_by_id(settings))[task_id]
    assert task["retried_by_task_id"] is None
    assert _error(task)["name"] == "TaskCanceled"
    assert [message["status"] for message in results.json_values()] == ["canceled"]
    assert len(await tasks_by_id(settings)) == 1
