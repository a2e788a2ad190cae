"""Dispatchers endpoints and their actions, and an event creating a task through one."""

from __future__ import annotations


from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import assert_error, create_user, function_body
from tests.support import exh_event, fetch, publish, running_service, wait_for

TASK_ACTION = {"type": "task", "name": "run-echo", "functionName": "echo-fn", "data": {"source": "dispatcher", "n": 1},
               "tags": ["from-dispatcher"]}
MAIL_ACTION = {"type": "mail", "name": "notify", "recipients": {"to": ["ops@example.com"]}, "templateId": "a" * 24}


async def _create(client, admin, **body) -> dict:
    payload = {"eventType": "user_deleted", "name": "cleanup", "description": "GDPR", "tags": ["gdpr"],
               "actions": [TASK_ACTION, MAIL_ACTION], **body}
    response = await client.post("/dispatchers/v1/", json=payload, headers=admin["headers"])
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_and_list_dispatchers(client, admin) -> None:
    dispatcher = await _create(client, admin)
    assert dispatcher["eventType"] == "user_deleted"
    assert dispatcher["name"] == "cleanup"
    assert dispatcher["tags"] == ["gdpr"]
    assert isinstance(dispatcher["creationTimestamp"], int)
    task_action, mail_action = dispatcher["actions"]
    assert task_action["type"] == "task"
    assert task_action["functionName"] == "echo-fn"
    assert task_action["data"] == {"source": "dispatcher", "n": 1}
    assert mail_action["recipients"] == {"to": ["ops@example.com"]}
    assert len(task_action["id"]) == 24
    headers = admin["headers"]
    other = await _create(client, admin, name="second", eventType="user_created", actions=[])
    listed = (await client.get("/dispatchers/v1/", headers=headers)).json()
    assert listed["page"]["total"] == 2
    found = (await client.get(f"/dispatchers/v1/?eq(id,{other['id']})", headers=headers)).json()
    assert [item["id"] for item in found["data"]] == [other["id"]]
    by_type = (await client.get("/dispatchers/v1?eventType=user_deleted&select(name)", headers=headers)).json()
    assert by_type["data"] == [{"id": dispatcher["id"], "name": "cleanup"}]
    by_action = (await client.get("/dispatchers/v1/?contains(actions,eq(functionName,echo%252Dfn))",
                                  headers=headers)).json()
    assert [item["id"] for item in by_action["data"]] == [dispatcher["id"]]
    assert_error(await client.get("/dispatchers/v1/?sort(actions)", headers=headers), 19, 400)


async def test_create_dispatcher_errors(client, admin, auth: AuthRepository) -> None:
    headers = admin["headers"]
    await _create(client, admin)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "x", "name": "cleanup"}, headers=headers),
                 17, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"name": "no-type"}, headers=headers), 14, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": ""}, headers=headers), 15, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "a\u0000b"}, headers=headers), 15, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "x", "actions": [{"type": "task"}]},
                                   headers=headers), 14, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "x", "actions": [{"type": "sms"}]},
                                   headers=headers), 15, 400)
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "x", "actions": [{"type": "mail"}]},
                                   headers=headers), 14, 400)
    duplicate_actions = {"eventType": "x", "actions": [TASK_ACTION, TASK_ACTION]}
    assert_error(await client.post("/dispatchers/v1/", json=duplicate_actions, headers=headers), 17, 400)
    viewer = await create_user(auth, ["VIEW_DISPATCHERS"])
    assert_error(await client.post("/dispatchers/v1/", json={"eventType": "x"}, headers=viewer["headers"]), 10, 401)


async def test_update_and_delete_dispatcher(client, admin) -> None:
    headers = admin["headers"]
    dispatcher = await _create(client, admin)
    response = await client.put(f"/dispatchers/v1/{dispatcher['id']}",
                                json={"eventType": "user_created", "description": None, "tags": ["a", "b"]},
                                headers=headers)
    assert response.json() == {"affectedRecords": 1}
    [updated] = (await client.get(f"/dispatchers/v1/?eq(id,{dispatcher['id']})", headers=headers)).json()["data"]
    assert updated["eventType"] == "user_created"
    assert "description" not in updated
    assert updated["name"] == "cleanup"
    assert updated["tags"] == ["a", "b"]
    assert updated["updateTimestamp"] >= dispatcher["updateTimestamp"]
    await _create(client, admin, name="taken", actions=[])
    assert_error(await client.put(f"/dispatchers/v1/{dispatcher['id']}", json={"name": "taken"}, headers=headers),
                 17, 400)
    assert_error(await client.put("/dispatchers/v1/" + "e" * 24, json={"name": "x"}, headers=headers), 16, 404)
    assert_error(await client.put("/dispatchers/v1/bad-id", json={"name": "x"}, headers=headers), 12, 400)
    assert_error(await client.put(f"/dispatchers/v1/{dispatcher['id']}", json={"tags": "a"}, headers=headers), 15, 400)
    assert (await client.delete(f"/dispatchers/v1/{dispatcher['id']}", headers=headers)).json() == {"affectedRecords": 1}
    assert_error(await client.delete(f"/dispatchers/v1/{dispatcher['id']}", headers=headers), 16, 404)
    assert_error(await client.delete("/dispatchers/v1/nope", headers=headers), 12, 400)


async def test_actions(client, admin) -> None:
    headers = admin["headers"]
    dispatcher = await _create(client, admin, actions=[])
    base = f"/dispatchers/v1/{dispatcher['id']}/actions"
    action = (await client.post(base, json={**TASK_ACTION, "startTimestamp": "2030-01-01T00:00:00.000Z"},
                                headers=headers)).json()
    assert action["functionName"] == "echo-fn"
    assert action["startTimestamp"] == 1893456000000
    assert_error(await client.post(base, json=TASK_ACTION, headers=headers), 17, 400)
    response = await client.put(f"{base}/{action['id']}", json={"data": {"n": 2}, "name": "renamed"}, headers=headers)
    assert response.json() == {"affectedRecords": 1}
    [listed] = (await client.get(f"/dispatchers/v1/?eq(id,{dispatcher['id']})", headers=headers)).json()["data"]
    assert listed["actions"][0]["data"] == {"n": 2}
    assert listed["actions"][0]["name"] == "renamed"
    assert_error(await client.put(f"{base}/{action['id']}", json={"type": "mail"}, headers=headers), 15, 400)
    assert_error(await client.put(f"{base}/" + "f" * 24, json={"name": "x"}, headers=headers), 16, 404)
    assert_error(await client.put(f"{base}/short", json={"name": "x"}, headers=headers), 12, 400)
    assert_error(await client.post("/dispatchers/v1/" + "f" * 24 + "/actions", json=TASK_ACTION, headers=headers),
                 16, 404)
    assert (await client.delete(f"{base}/{action['id']}", headers=headers)).json() == {"affectedRecords": 1}
    assert_error(await client.delete(f"{base}/{action['id']}", headers=headers), 16, 404)


async def test_event_creates_task_through_api_dispatcher(client, admin, settings) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("echo-fn"), headers=headers)
    await _create(client, admin)
    topic = next(name for name, kind in settings.topics.items() if kind == "exh")
    async with running_service(settings, ("ingest", "worker")):
        await publish(settings, topic, [exh_event("65a000000000000000000001", "user_deleted", id="u1")])
        await wait_for(lambda: _complete(settings), timeout=60, message="the dispatched task to complete")
    tasks = (await client.get("/tasks/v1/?eq(functionName,echo-fn)", headers=headers)).json()["data"]
    [task] = tasks
    assert task["tags"] == ["from-dispatcher"]
    assert task["data"]["source"] == "dispatcher"
    assert task["data"]["event"]["type"] == "user_deleted"


async def _complete(settings) -> bool:
    rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE status = 'complete'")
    return rows[0]["n"] == 1
