"""Tasks endpoints: list with RQL, create, read, cancel, logs."""

from __future__ import annotations

from typing import Any

import httpx

from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import assert_error, create_user, function_body


async def _deploy(client: httpx.AsyncClient, admin: dict[str, Any], name: str = "echo-fn", **fields: Any) -> None:
    response = await client.post("/tasks/v1/functions", json=function_body(name, **fields), headers=admin["headers"])
    assert response.status_code == 200, response.text


async def _create(client: httpx.AsyncClient, admin: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/tasks/v1/", json={"functionName": "echo-fn", **body}, headers=admin["headers"])
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_task_returns_task(client, admin) -> None:
    await _deploy(client, admin)
    task = await _create(client, admin, data={"n": 1, "nested": {"k": "v"}}, tags=["a", "b"], priority=7,
                         startTimestamp="2030-01-01T00:00:00.000Z")
    assert task["status"] == "new"
    assert task["functionName"] == "echo-fn"
    assert task["data"] == {"n": 1, "nested": {"k": "v"}}
    assert task["tags"] == ["a", "b"]
    assert task["priority"] == 7
    assert task["startTimestamp"] == "2030-01-01T00:00:00.000Z"
    assert task["createdByUserId"] == admin["id"]
    assert task["createdByApplicationId"] == admin["application_id"]
    assert len(task["id"]) == 24
    assert task["creationTimestamp"].endswith("Z")


async def test_create_task_counted(client, admin) -> None:
    from prometheus_client import REGISTRY

    await _deploy(client, admin)
    labels = {"source": "api", "function": "echo-fn"}
    before = REGISTRY.get_sample_value("taskservice_tasks_created_total", labels) or 0
    await _create(client, admin)
    assert REGISTRY.get_sample_value("taskservice_tasks_created_total", labels) == before + 1


async def test_create_task_concurrency_key(client, admin, settings) -> None:
    from tests.support import fetch

    await _deploy(client, admin)
    task = await _create(client, admin, concurrencyKey="user-42")
    rows = await fetch(settings, "SELECT concurrency_key FROM tasks WHERE id = $1", task["id"])
    assert rows[0]["concurrency_key"] == "user-42"
    response = await client.post("/tasks/v1/", json={"functionName": "echo-fn", "concurrencyKey": ""},
                                 headers=admin["headers"])
    assert response.status_code == 400


async def test_create_task_defaults(client, admin) -> None:
    await _deploy(client, admin, executionOptions={"defaultPriority": 3})
    task = await _create(client, admin)
    assert task["priority"] == 3
    assert task["data"] == {}
    assert task["tags"] == []
    assert task["startTimestamp"] == task["creationTimestamp"]


async def test_create_task_errors(client, admin, settings) -> None:
    headers = admin["headers"]
    assert_error(await client.post("/tasks/v1/", json={"functionName": "nope"}, headers=headers), 16, 404)
    await _deploy(client, admin)
    await client.post("/tasks/v1/functions/echo-fn/disable", json={}, headers=headers)
    assert_error(await client.post("/tasks/v1/", json={"functionName": "echo-fn"}, headers=headers), 27, 400)
    assert_error(await client.post("/tasks/v1/", headers=headers), 13, 400)
    assert_error(await client.post("/tasks/v1/", content=b"{nope", headers={**headers, "Content-Type": "application/json"}),
                 22, 400)
    assert_error(await client.post("/tasks/v1/", json=[1, 2], headers=headers), 22, 400)
    assert_error(await client.post("/tasks/v1/", json={"data": {}}, headers=headers), 14, 400)
    assert_error(await client.post("/tasks/v1/", json={"functionName": 5}, headers=headers), 15, 400)
    assert_error(await client.post("/tasks/v1/", json={"functionName": "echo-fn", "priority": "high"},
                                   headers=headers), 15, 400)
    assert_error(await client.post("/tasks/v1/", json={"functionName": "echo-fn", "priority": 2**60},
                                   headers=headers), 15, 400)
    assert_error(await client.post("/tasks/v1/", json={"functionName": "echo-fn", "startTimestamp": "yesterday"},
                                   headers=headers), 15, 400)
    big = {"blob": "x" * settings.max_task_data_bytes}
    await client.post("/tasks/v1/functions/echo-fn/enable", json={}, headers=headers)
    assert_error(await client.post("/tasks/v1/", json={"functionName": "echo-fn", "data": big}, headers=headers),
                 15, 400)


async def test_list_tasks_page_and_filters(client, admin) -> None:
    await _deploy(client, admin)
    await _deploy(client, admin, "other-fn")
    created = [await _create(client, admin, data={"n": i, "kind": "even" if i % 2 == 0 else "odd"},
                             tags=[f"t{i}"], priority=i) for i in range(6)]
    await client.post("/tasks/v1/", json={"functionName": "other-fn"}, headers=admin["headers"])
    headers = admin["headers"]

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/tasks/v1/{query}", headers=headers)
        assert response.status_code == 200, response.text
        return [task["id"] for task in response.json()["data"]]

    assert await ids("?eq(functionName,echo%252Dfn)") == [task["id"] for task in created]
    assert await ids("?functionName=other-fn&select(id)") != []
    assert await ids("?eq(data.kind,even)") == [created[i]["id"] for i in (0, 2, 4)]
    assert await ids("?gt(data.n,3)") == [created[i]["id"] for i in (4, 5)]
    assert await ids("?priority=ge=4&sort(-priority)") == [created[i]["id"] for i in (5, 4)]
    assert await ids("?in(tags,t1,t3)") == [created[i]["id"] for i in (1, 3)]
    assert await ids("?eq(tags,t2)") == [created[2]["id"]]
    assert await ids("?or(eq(data.n,1),eq(data.n,5))") == [created[i]["id"] for i in (1, 5)]
    assert await ids("?out(data.kind,odd)&functionName=echo-fn") == [created[i]["id"] for i in (0, 2, 4)]
    assert await ids("?like(functionName,ECHO)&limit(2,1)") == [created[i]["id"] for i in (1, 2)]
    assert await ids(f"?eq(id,{created[3]['id']})") == [created[3]["id"]]
    assert await ids("?eq(status,new)&ge(creationTimestamp,2000-01-01T00:00:00.000Z)&limit(50)") != []
    assert await ids("?lt(creationTimestamp,2000-01-01T00:00:00.000Z)") == []


async def test_list_tasks_envelope(client, admin) -> None:
    await _deploy(client, admin)
    for _ in range(3):
        await _create(client, admin)
    response = await client.get("/tasks/v1?limit(2,1)", headers=admin["headers"])
    body = response.json()
    assert body["page"] == {"total": 3, "offset": 1, "limit": 2}
    assert len(body["data"]) == 2
    body = (await client.get("/tasks/v1/?skipCount()", headers=admin["headers"])).json()
    assert body["page"] == {"offset": 0, "limit": 20}
    body = (await client.get("/tasks/v1/?limit(500)&select(functionName,status)", headers=admin["headers"])).json()
    assert body["page"]["limit"] == 50
    assert set(body["data"][0]) == {"id", "functionName", "status"}


async def test_list_tasks_bad_rql(client, admin) -> None:
    headers = admin["headers"]
    for query in ("?eq(functionName", "?nope(a,b)", "?eq(unknownField,1)", "?limit(0)", "?limit(a)",
                  "?eq(priority,high)", "?lt(creationTimestamp,yesterday)", "?sort(+data)&sort(-id)",
                  "?eq(a,1)&eq(b,2)|eq(c,3)", "?or(limit(5),eq(status,new))", "?select(secret)", "?%FF"):
        assert_error(await client.get(f"/tasks/v1/{query}", headers=headers), 19, 400)


async def test_list_tasks_permissions(client, auth: AuthRepository) -> None:
    viewer = await create_user(auth, ["CREATE_TASKS"])
    assert_error(await client.get("/tasks/v1/", headers=viewer["headers"]), 10, 401)
    assert_error(await client.get("/tasks/v1/"), 104, 401)
    assert_error(await client.get("/tasks/v1/", headers={"Authorization": "Basic abc"}), 104, 401)


async def test_get_task_extension(client, admin) -> None:
    await _deploy(client, admin)
    executed = (await client.post("/tasks/v1/functions/echo-fn/execute", json={"data": {"v": 1}},
                                  headers=admin["headers"])).json()
    response = await client.get(f"/tasks/v1/{executed['id']}", headers=admin["headers"])
    task = response.json()
    assert task["status"] == "complete"
    assert task["result"] == {"echo": {"v": 1}, "functionName": "echo-fn"}
    assert task["attempt"] == 1
    assert task["duration"] >= 0
    assert task["startedTimestamp"] <= task["finishedTimestamp"]
    assert_error(await client.get("/tasks/v1/not-an-id", headers=admin["headers"]), 12, 400)
    assert_error(await client.get("/tasks/v1/" + "a" * 24, headers=admin["headers"]), 16, 404)


async def test_cancel_task(client, admin) -> None:
    await _deploy(client, admin)
    task = await _create(client, admin, startTimestamp="2040-01-01T00:00:00Z")
    headers = admin["headers"]
    response = await client.post(f"/tasks/v1/{task['id']}/cancel", json={}, headers=headers)
    assert response.json() == {"affectedRecords": 1}
    listed = (await client.get(f"/tasks/v1/?eq(id,{task['id']})", headers=headers)).json()["data"][0]
    assert listed["status"] == "canceled"
    assert_error(await client.post(f"/tasks/v1/{task['id']}/cancel", json={}, headers=headers), 27, 400)
    assert_error(await client.post("/tasks/v1/" + "b" * 24 + "/cancel", json={}, headers=headers), 16, 404)
    assert_error(await client.post("/tasks/v1/xyz/cancel", json={}, headers=headers), 12, 400)


async def test_task_logs(client, admin) -> None:
    await _deploy(client, admin)
    headers = admin["headers"]
    executed = (await client.post("/tasks/v1/functions/echo-fn/execute", json={}, headers=headers)).json()
    body = (await client.get(f"/tasks/v1/{executed['id']}/logs", headers=headers)).json()
    assert body["page"] == {"offset": 0, "limit": 1000}
    [line] = body["data"]
    assert line["message"].split("\t")[1:3] == [executed["id"], "INFO"]
    assert line["timestamp"].endswith("Z")
    since = (await client.get(f"/tasks/v1/{executed['id']}/logs?timestamp>=2999-01-01T00:00:00.000Z",
                              headers=headers)).json()
    assert since["data"] == []
    same = (await client.get(f"/tasks/v1/{executed['id']}/logs?ge(timestamp,2000-01-01T00%253A00%253A00.000Z)",
                             headers=headers)).json()
    assert len(same["data"]) == 1


async def test_task_logs_errors(client, admin) -> None:
    await _deploy(client, admin)
    await _deploy(client, admin, "quiet-fn", handler="def handle(task, context):\n    return 1\n")
    headers = admin["headers"]
    waiting = await _create(client, admin)
    assert_error(await client.get(f"/tasks/v1/{waiting['id']}/logs", headers=headers), 27, 400)
    quiet = (await client.post("/tasks/v1/functions/quiet-fn/execute", json={}, headers=headers)).json()
    assert_error(await client.get(f"/tasks/v1/{quiet['id']}/logs", headers=headers), 1408, 400)
    assert_error(await client.get("/tasks/v1/" + "c" * 24 + "/logs", headers=headers), 16, 404)
    assert_error(await client.get("/tasks/v1/short/logs", headers=headers), 12, 400)
    assert_error(await client.get(f"/tasks/v1/{waiting['id']}/logs?eq(status,new)", headers=headers), 19, 400)
    assert_error(await client.get(f"/tasks/v1/{waiting['id']}/logs?ge(timestamp,soon)", headers=headers), 19, 400)
