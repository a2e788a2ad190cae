"""`taskservice tasks redrive` against real PostgreSQL, and a redriven task run by a real worker."""

from __future__ import annotations

import json

import pytest

from taskservice.admin import register_functions
from taskservice.config import Settings
from tests.conftest import TEST_FUNCTIONS_DIR
from tests.recovery.common import insert_task, run_cli
from tests.support import fetch, running_service, wait_for


@pytest.fixture
async def tasks(settings: Settings) -> dict[str, str]:
    """Tasks of every status: three failed ones (a, b of fail; c of echo) and one of each other status."""
    await register_functions(settings, TEST_FUNCTIONS_DIR)
    return {
        "a": await insert_task(settings, "fail", "failed", error_name="RuntimeError", failed_minutes_ago=180),
        "b": await insert_task(settings, "fail", "failed", error_name="Runtime.Timeout", failed_minutes_ago=60,
                               data={"n": 2}, tags=["x", "y"], priority=9),
        "c": await insert_task(settings, "echo", "failed", error_name="RuntimeError", failed_minutes_ago=30),
        "retried": await insert_task(settings, "fail", "retried", error_name="RuntimeError"),
        "canceled": await insert_task(settings, "fail", "canceled", error_name="TaskCanceled"),
        "complete": await insert_task(settings, "fail", "complete"),
        "new": await insert_task(settings, "fail", "new"),
        "running": await insert_task(settings, "fail", "inProgress"),
    }


async def _redrive(settings: Settings, *args: str) -> dict:
    result = await run_cli(settings, "tasks", "redrive", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def _redrive_rows(settings: Settings) -> list:
    return await fetch(settings, "SELECT * FROM tasks WHERE source = 'redrive' ORDER BY creation_timestamp, id")


async def test_redrive_selects_and_links(settings: Settings, tasks: dict[str, str]) -> None:
    dry = await _redrive(settings, "--function", "fail", "--dry-run")
    assert dry["dryRun"] is True
    assert [item["failedTaskId"] for item in dry["data"]] == [tasks["a"], tasks["b"]]
    assert all(item["taskId"] is None for item in dry["data"])
    assert await _redrive_rows(settings) == []

    window = await _redrive(settings, "--since", "2h", "--until", "45m", "--dry-run")
    assert [item["failedTaskId"] for item in window["data"]] == [tasks["b"]]
    oldest = await _redrive(settings, "--limit", "1", "--dry-run")
    assert [item["failedTaskId"] for item in oldest["data"]] == [tasks["a"]]

    first = await _redrive(settings, "--function", "fail", "--error", "RuntimeError")
    assert first["affectedRecords"] == 1
    [item] = first["data"]
    assert item["failedTaskId"] == tasks["a"]
    assert item["functionName"] == "fail"
    assert item["errorName"] == "RuntimeError"
    [row] = await _redrive_rows(settings)
    assert row["id"] == item["taskId"]
    assert row["status"] == "new"
    assert row["function_name"] == "fail"
    assert json.loads(row["data"]) == {"n": 1}
    assert row["tags"] == ["t1"]
    assert row["priority"] == 3
    assert row["attempt"] == 0
    assert row["idempotency_key"] == f"redrive:{tasks['a']}"
    assert row["retry_for_task_ids"] == [tasks["a"]]
    [failed] = await fetch(settings, "SELECT status, retried_by_task_id FROM tasks WHERE id = $1", tasks["a"])
    assert failed["status"] == "failed"
    assert failed["retried_by_task_id"] == row["id"]

    again = await _redrive(settings, "--function", "fail", "--error", "RuntimeError")
    assert again["affectedRecords"] == 0

    rest = await run_cli(settings, "tasks", "redrive")
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.splitlines()[-1] == "redrove 2 failed task(s)"
    assert f"{tasks['b']} -> " in rest.stdout
    assert f"{tasks['c']} -> " in rest.stdout

    rows = await _redrive_rows(settings)
    assert sorted(row["idempotency_key"] for row in rows) == sorted(f"redrive:{tasks[k]}" for k in "abc")
    b_row = next(row for row in rows if row["idempotency_key"] == f"redrive:{tasks['b']}")
    assert json.loads(b_row["data"]) == {"n": 2}
    assert b_row["tags"] == ["x", "y"]
    assert b_row["priority"] == 9

    last = await _redrive(settings)
    assert last["affectedRecords"] == 0
    statuses = await fetch(settings, "SELECT id, status FROM tasks WHERE source <> 'redrive'")
    assert {row["id"]: row["status"] for row in statuses} == {
        tasks["a"]: "failed", tasks["b"]: "failed", tasks["c"]: "failed", tasks["retried"]: "retried",
        tasks["canceled"]: "canceled", tasks["complete"]: "complete", tasks["new"]: "new",
        tasks["running"]: "inProgress"}


async def test_redrive_rejects_bad_input(settings: Settings, tasks: dict[str, str]) -> None:
    await fetch(settings, "UPDATE functions SET enabled = false WHERE name = 'echo'")
    cases = [
        (["--function", "nope"], "no function named 'nope'"),
        (["--function", "echo"], "function 'echo' is disabled"),
        (["--since", "yesterday"], "since 'yesterday' is not a time"),
        (["--until", "2027-01-01T00:00:00"], "has no UTC offset"),
        (["--since", "1h", "--until", "2h"], "is not before until"),
        (["--limit", "0"], "--limit must be at least 1 (got 0)"),
        (["--error", " "], "must have 1 to 256 characters"),
    ]
    for arguments, fragment in cases:
        result = await run_cli(settings, "tasks", "redrive", *arguments)
        assert result.returncode == 1, arguments
        assert fragment in result.stderr, (arguments, result.stderr)
    usage = await run_cli(settings, "tasks", "redrive", "--limit", "many")
    assert usage.returncode == 2
    assert "invalid int value: 'many'" in usage.stderr
    assert await _redrive_rows(settings) == []


async def test_redriven_task_runs(settings: Settings) -> None:
    await register_functions(settings, TEST_FUNCTIONS_DIR)
    first = [await insert_task(settings, "fail", "new", failed_minutes_ago=0) for _ in range(2)]

    async def failed_count(expected: int) -> bool:
        rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE status = 'failed'")
        return rows[0]["n"] == expected

    async with running_service(settings, ("worker",)):
        await wait_for(lambda: failed_count(2), timeout=60, message="two failed tasks")
        result = await _redrive(settings, "--function", "fail", "--error", "RuntimeError")
        assert result["affectedRecords"] == 2
        await wait_for(lambda: failed_count(4), timeout=60, message="the redriven tasks to run and fail")
    rows = await _redrive_rows(settings)
    assert sorted(row["retry_for_task_ids"][0] for row in rows) == sorted(first)
    assert all(row["attempt"] == 1 for row in rows)
    assert all(json.loads(row["error"])["name"] == "RuntimeError" for row in rows)
