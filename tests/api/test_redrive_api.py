"""POST /tasks/v1/redrive: re-run failed tasks once each, with the filters validated."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import FAIL_HANDLER, assert_error, create_user, function_body
from tests.recovery.common import insert_task
from tests.support import fetch


@pytest.fixture
async def failed(client: httpx.AsyncClient, admin: dict[str, Any], settings) -> dict[str, str]:
    """Two deployed functions with failed tasks, and tasks of every other status."""
    for name, handler in (("fail-fn", FAIL_HANDLER), ("other-fn", FAIL_HANDLER)):
        response = await client.post("/tasks/v1/functions", json=function_body(name, handler),
                                     headers=admin["headers"])
        assert response.status_code == 200, response.text
    return {
        "old": await insert_task(settings, "fail-fn", "failed", error_name="ValueError", failed_minutes_ago=120),
        "recent": await insert_task(settings, "fail-fn", "failed", error_name="ValueError", failed_minutes_ago=5),
        "timeout": await insert_task(settings, "fail-fn", "failed", error_name="Runtime.Timeout", failed_minutes_ago=4),
        "other": await insert_task(settings, "other-fn", "failed", error_name="ValueError", failed_minutes_ago=3),
        "retried": await insert_task(settings, "fail-fn", "retried", error_name="ValueError"),
        "canceled": await insert_task(settings, "fail-fn", "canceled", error_name="TaskCanceled"),
        "complete": await insert_task(settings, "fail-fn", "complete"),
    }


async def _redrive(client: httpx.AsyncClient, admin: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/tasks/v1/redrive", json=body, headers=admin["headers"])
    assert response.status_code == 200, response.text
    return response.json()


async def test_redrive_creates_one_task_each(client, admin, settings, failed) -> None:
    result = await _redrive(client, admin, functionName="fail-fn", errorName="ValueError")
    assert result["affectedRecords"] == 2
    assert result["dryRun"] is False
    assert [item["failedTaskId"] for item in result["data"]] == [failed["old"], failed["recent"]]
    new_ids = [item["taskId"] for item in result["data"]]

    for new_id, failed_id in zip(new_ids, (failed["old"], failed["recent"])):
        task = (await client.get(f"/tasks/v1/{new_id}", headers=admin["headers"])).json()
        assert task["status"] == "new"
        assert task["functionName"] == "fail-fn"
        assert task["data"] == {"n": 1}
        assert task["tags"] == ["t1"]
        assert task["priority"] == 3
        assert task["retryForTaskIds"] == [failed_id]
        original = (await client.get(f"/tasks/v1/{failed_id}", headers=admin["headers"])).json()
        assert original["status"] == "failed"
        assert original["retriedByTaskId"] == new_id

    again = await _redrive(client, admin, functionName="fail-fn", errorName="ValueError")
    assert again == {"affectedRecords": 0, "dryRun": False, "data": []}
    rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE source = 'redrive'")
    assert rows[0]["n"] == 2


async def test_redrive_filters_and_statuses(client, admin, settings, failed) -> None:
    dry = await _redrive(client, admin, dryRun=True)
    assert [item["failedTaskId"] for item in dry["data"]] == [failed["old"], failed["recent"], failed["timeout"],
                                                              failed["other"]]
    assert dry["affectedRecords"] == 4
    recent = await _redrive(client, admin, functionName="fail-fn", since="1h", dryRun=True)
    assert [item["failedTaskId"] for item in recent["data"]] == [failed["recent"], failed["timeout"]]
    window = await _redrive(client, admin, since="3h", until="1h", dryRun=True)
    assert [item["failedTaskId"] for item in window["data"]] == [failed["old"]]

    limited = await _redrive(client, admin, limit=1)
    assert [item["failedTaskId"] for item in limited["data"]] == [failed["old"]]
    everything = await _redrive(client, admin, limit=1000)
    assert [item["failedTaskId"] for item in everything["data"]] == [failed["recent"], failed["timeout"],
                                                                     failed["other"]]
    assert (await _redrive(client, admin))["affectedRecords"] == 0
    rows = await fetch(settings, "SELECT idempotency_key FROM tasks WHERE source = 'redrive'")
    redriven = sorted(row["idempotency_key"].removeprefix("redrive:") for row in rows)
    assert redriven == sorted(failed[name] for name in ("old", "recent", "timeout", "other"))


async def test_redrive_rejects_bad_input(client, admin, failed) -> None:
    headers = admin["headers"]
    cases: list[tuple[Any, int, int, str]] = [
        ({"functionName": "nope"}, 16, 404, "no function named 'nope'"),
        ({"since": "yesterday"}, 15, 400, "since 'yesterday' is not a time"),
        ({"until": "2027-01-01T00:00:00"}, 15, 400, "has no UTC offset"),
        ({"since": "1h", "until": "2h"}, 15, 400, "is not before until"),
        ({"errorName": 5}, 15, 400, "errorName"),
        ({"errorName": ["ValueError"]}, 15, 400, "errorName"),
        ({"errorName": " "}, 15, 400, "must have 1 to 256 characters"),
        ({"functionName": 1}, 15, 400, "functionName"),
        ({"limit": 0}, 15, 400, "limit"),
        ({"limit": 1001}, 15, 400, "limit"),
        ({"limit": "10"}, 15, 400, "limit"),
        ({"dryRun": "yes"}, 15, 400, "dryRun"),
        ({"function": "fail-fn"}, 15, 400, "function is not a field of this body"),
        ([1], 22, 400, "JSON object"),
    ]
    for body, code, status, fragment in cases:
        response = await client.post("/tasks/v1/redrive", json=body, headers=headers)
        error = assert_error(response, code, status)
        assert fragment in error["message"], (body, error)
    assert_error(await client.post("/tasks/v1/redrive", headers=headers), 13, 400)

    await client.post("/tasks/v1/functions/other-fn/disable", json={}, headers=headers)
    disabled = assert_error(await client.post("/tasks/v1/redrive", json={"functionName": "other-fn"},
                                              headers=headers), 27, 400)
    assert "disabled" in disabled["message"]
    # A redrive without a function filter leaves tasks of disabled functions out.
    result = await _redrive(client, admin, dryRun=True)
    assert failed["other"] not in [item["failedTaskId"] for item in result["data"]]


async def test_redrive_needs_create_permission(client, auth: AuthRepository, failed) -> None:
    viewer = await create_user(auth, ["VIEW_TASKS"])
    assert_error(await client.post("/tasks/v1/redrive", json={}, headers=viewer["headers"]), 10, 401)
    assert_error(await client.post("/tasks/v1/redrive", json={}), 104, 401)
    creator = await create_user(auth, ["CREATE_TASKS"])
    response = await client.post("/tasks/v1/redrive/", json={"dryRun": True}, headers=creator["headers"])
    assert response.status_code == 200, response.text
    assert response.json()["affectedRecords"] == 4
