"""Functions endpoints: deploy with zip validation, read, update, delete, enable, disable, execute, logs."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from datetime import UTC, datetime, timedelta

import httpx

from taskservice.api.app import create_app
from taskservice.definitions import MAX_CODE_BYTES
from taskservice.health import Health
from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import ECHO_HANDLER, FAIL_HANDLER, assert_error, create_user, function_body, zip_code
from tests.support import fetch, wait_for


async def test_create_function_returns_details(client, admin) -> None:
    body = function_body("my-fn", description="echoes", timeLimit=20, memoryLimit=256,
                         environmentVariables={"API_HOST": {"value": "http://127.0.0.1:9"}},
                         executionOptions={"permissionMode": "allUsers", "defaultPriority": 4},
                         retryPolicy={"enabled": True, "errorsToRetry": ["ValueError"]}, unknownKey=1)
    response = await client.post("/tasks/v1/functions/", json=body, headers=admin["headers"])
    assert response.status_code == 200, response.text
    details = response.json()
    assert details["name"] == "my-fn"
    assert details["description"] == "echoes"
    assert details["entryPoint"] == "handler.handle"
    assert details["timeLimit"] == 20
    assert details["memoryLimit"] == 256
    assert details["environmentVariables"] == {"API_HOST": {"value": "http://127.0.0.1:9"}}
    assert details["executionOptions"] == {"permissionMode": "allUsers", "defaultPriority": 4}
    assert details["retryPolicy"] == {"enabled": True, "errorsToRetry": ["ValueError"]}
    assert details["enabled"] is True
    assert "code" not in details
    assert details["creationTimestamp"] == details["updateTimestamp"]


async def test_list_and_get_functions(client, admin) -> None:
    headers = admin["headers"]
    for name in ("b-fn", "a-fn"):
        await client.post("/tasks/v1/functions", json=function_body(name, description=f"{name} text"), headers=headers)
    body = (await client.get("/tasks/v1/functions/?limit(1)", headers=headers)).json()
    assert body["page"] == {"total": 2, "offset": 0, "limit": 2}
    assert [item["name"] for item in body["data"]] == ["a-fn", "b-fn"]
    assert set(body["data"][0]) == {"name", "description", "updateTimestamp"}
    details = (await client.get("/tasks/v1/functions/a-fn", headers=headers)).json()
    assert details["description"] == "a-fn text"
    assert_error(await client.get("/tasks/v1/functions/none-here", headers=headers), 16, 404)


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


async def test_create_function_code_errors(client, admin) -> None:
    headers = admin["headers"]

    async def create(**fields) -> object:
        return await client.post("/tasks/v1/functions", json=function_body("bad-fn", **fields), headers=headers)

    assert_error(await create(code=""), 1401, 400)
    assert_error(await create(code="not base64 !!"), 1401, 400)
    assert_error(await create(code=base64.b64encode(b"plain text, no zip").decode()), 1401, 400)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w"):
        pass
    assert_error(await create(code=base64.b64encode(buffer.getvalue()).decode()), 1401, 400)
    traversal = _zip_bytes({"handler.py": ECHO_HANDLER.encode(), "../../etc/evil.py": b"x = 1"})
    assert_error(await create(code=base64.b64encode(traversal).decode()), 1401, 400)
    absolute = _zip_bytes({"handler.py": ECHO_HANDLER.encode(), "/tmp/evil.py": b"x = 1"})
    assert_error(await create(code=base64.b64encode(absolute).decode()), 1401, 400)
    too_large = base64.b64encode(b"\0" * (MAX_CODE_BYTES + 10)).decode()
    assert_error(await create(code=too_large), 1401, 400)
    assert_error(await create(code=123), 1401, 400)
    body = function_body("bad-fn")
    del body["code"]
    assert_error(await client.post("/tasks/v1/functions", json=body, headers=headers), 14, 400)


async def test_create_function_configuration_errors(client, admin) -> None:
    headers = admin["headers"]

    async def create(name: str = "cfg-fn", **fields) -> object:
        return await client.post("/tasks/v1/functions", json=function_body(name, **fields), headers=headers)

    assert_error(await create(runtime="nodejs18.x"), 1402, 400)
    assert_error(await create(runtime="python2.7"), 1402, 400)
    assert_error(await create(entryPoint="missing.handle"), 1402, 400)
    assert_error(await create(entryPoint="no-dots"), 1402, 400)
    assert_error(await create(timeLimit=2), 1402, 400)
    assert_error(await create(timeLimit=301), 1402, 400)
    assert_error(await create(timeLimit="10"), 1402, 400)
    assert_error(await create(memoryLimit=64), 1402, 400)
    assert_error(await create(environmentVariables={"BIG": {"value": "x" * 5000}}), 1402, 400)
    assert_error(await create(environmentVariables={"1BAD": {"value": "x"}}), 1402, 400)
    assert_error(await create(executionOptions={"permissionMode": "everyone"}), 1402, 400)
    assert_error(await create(name="bad name!"), 1407, 400)
    assert_error(await create(name="x" * 65), 1407, 400)
    assert_error(await create(name=42), 1407, 400)
    assert_error(await create(description="nul \u0000 character"), 15, 400)
    assert (await create("dup-fn")).status_code == 200
    assert_error(await create("dup-fn"), 17, 400)


async def test_create_function_accepts_package_entry_point(client, admin) -> None:
    code = zip_code({"pkg/__init__.py": "", "pkg/main.py": ECHO_HANDLER})
    response = await client.post("/tasks/v1/functions", json=function_body("pkg-fn", code=code, entryPoint="pkg.main.handle"),
                                 headers=admin["headers"])
    assert response.status_code == 200, response.text
    executed = await client.post("/tasks/v1/functions/pkg-fn/execute", json={"data": {"p": 1}}, headers=admin["headers"])
    assert executed.json()["result"]["echo"] == {"p": 1}


async def test_update_function(client, admin) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("upd-fn", description="old"), headers=headers)
    before = (await client.get("/tasks/v1/functions/upd-fn", headers=headers)).json()
    response = await client.put("/tasks/v1/functions/upd-fn", json={"description": "new", "timeLimit": 15,
                                                                     "executionOptions": {"permissionMode": "public"},
                                                                     "name": "ignored", "enabled": False},
                                headers=headers)
    assert response.json() == {"affectedRecords": 1}
    after = (await client.get("/tasks/v1/functions/upd-fn", headers=headers)).json()
    assert after["description"] == "new"
    assert after["timeLimit"] == 15
    assert after["executionOptions"] == {"permissionMode": "public", "defaultPriority": 0}
    assert after["enabled"] is True
    assert after["updateTimestamp"] > before["updateTimestamp"]
    new_code = zip_code({"main.py": "def run(task, context):\n    return {'version': 2}\n"})
    response = await client.put("/tasks/v1/functions/upd-fn", json={"code": new_code, "entryPoint": "main.run"},
                                headers=headers)
    assert response.status_code == 200, response.text
    executed = await client.post("/tasks/v1/functions/upd-fn/execute", json={}, headers=headers)
    assert executed.json()["result"] == {"version": 2}


async def test_update_function_errors(client, admin) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("upd-fn"), headers=headers)
    assert_error(await client.put("/tasks/v1/functions/upd-fn", json={"code": "@@@"}, headers=headers), 1401, 400)
    assert_error(await client.put("/tasks/v1/functions/upd-fn", json={"entryPoint": "other.handle"}, headers=headers),
                 1402, 400)
    assert_error(await client.put("/tasks/v1/functions/upd-fn", json={"memoryLimit": 99999}, headers=headers),
                 1402, 400)
    assert_error(await client.put("/tasks/v1/functions/upd-fn", json={"runtime": "ruby3.2"}, headers=headers),
                 1402, 400)
    assert_error(await client.put("/tasks/v1/functions/absent-fn", json={"description": "x"}, headers=headers),
                 16, 404)
    assert_error(await client.put("/tasks/v1/functions/upd-fn", headers=headers), 13, 400)


async def test_delete_function_keeps_tasks(client, admin, settings) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("del-fn"), headers=headers)
    executed = (await client.post("/tasks/v1/functions/del-fn/execute", json={}, headers=headers)).json()
    assert (await client.delete("/tasks/v1/functions/del-fn", headers=headers)).json() == {"affectedRecords": 1}
    assert_error(await client.delete("/tasks/v1/functions/del-fn", headers=headers), 16, 404)
    assert_error(await client.get("/tasks/v1/functions/del-fn", headers=headers), 16, 404)
    rows = await fetch(settings, "SELECT status FROM tasks WHERE id = $1", executed["id"])
    assert rows[0]["status"] == "complete"
    logs = await client.get(f"/tasks/v1/{executed['id']}/logs", headers=headers)
    assert len(logs.json()["data"]) == 1


async def test_enable_disable(client, admin) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("tog-fn"), headers=headers)
    for action, enabled in (("disable", False), ("disable", False), ("enable", True), ("enable", True)):
        response = await client.post(f"/tasks/v1/functions/tog-fn/{action}", json={}, headers=headers)
        assert response.json() == {"affectedRecords": 1}
        assert (await client.get("/tasks/v1/functions/tog-fn", headers=headers)).json()["enabled"] is enabled
    assert_error(await client.post("/tasks/v1/functions/none-fn/enable", json={}, headers=headers), 16, 404)
    assert_error(await client.post("/tasks/v1/functions/none-fn/disable", headers=headers), 16, 404)
    assert_error(await client.get("/tasks/v1/functions/tog-fn/enable", headers=headers), None, 405)


async def test_execute_returns_task_with_result(client, admin, settings) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("exe-fn"), headers=headers)
    response = await client.post("/tasks/v1/functions/exe-fn/execute", json={"data": {"k": [1, 2]}}, headers=headers)
    task = response.json()
    assert task["status"] == "complete"
    assert task["result"] == {"echo": {"k": [1, 2]}, "functionName": "exe-fn"}
    assert task["createdByUserId"] == admin["id"]
    empty = await client.post("/tasks/v1/functions/exe-fn/execute", headers=headers)
    assert empty.json()["result"]["echo"] == {}
    rows = await fetch(settings, "SELECT status, attempt, worker_id FROM tasks WHERE id = $1", task["id"])
    assert rows[0]["status"] == "complete"
    assert rows[0]["worker_id"].startswith("http:")


async def test_execute_errors(client, admin, auth: AuthRepository) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("fail-fn", FAIL_HANDLER), headers=headers)
    body = assert_error(await client.post("/tasks/v1/functions/fail-fn/execute", json={"data": {"n": 3}},
                                          headers=headers), 1406, 400)
    assert body["runtimeError"] == {"name": "ValueError", "message": "bad input 3"}
    failed = (await client.get(f"/tasks/v1/{body['taskId']}", headers=headers)).json()
    assert failed["status"] == "failed"
    assert failed["error"]["name"] == "ValueError"

    no_handler = function_body("nohandler-fn", "def other(task, context):\n    return 1\n")
    await client.post("/tasks/v1/functions", json=no_handler, headers=headers)
    body = assert_error(await client.post("/tasks/v1/functions/nohandler-fn/execute", json={}, headers=headers),
                        1405, 400)
    assert len(body["taskId"]) == 24

    await client.post("/tasks/v1/functions", json=function_body("long-fn", timeLimit=31), headers=headers)
    assert_error(await client.post("/tasks/v1/functions/long-fn/execute", json={}, headers=headers), 1404, 400)
    assert_error(await client.post("/tasks/v1/functions/none-fn/execute", json={}, headers=headers), 16, 404)
    await client.post("/tasks/v1/functions", json=function_body("off-fn"), headers=headers)
    await client.post("/tasks/v1/functions/off-fn/disable", json={}, headers=headers)
    assert_error(await client.post("/tasks/v1/functions/off-fn/execute", json={}, headers=headers), 27, 400)
    await client.post("/tasks/v1/functions/off-fn/enable", json={}, headers=headers)
    assert_error(await client.post("/tasks/v1/functions/off-fn/execute", json={"data": "text"}, headers=headers),
                 15, 400)


async def test_execute_permission_modes(client, admin, auth: AuthRepository) -> None:
    headers = admin["headers"]
    for name, mode in (("req-fn", "permissionRequired"), ("all-fn", "allUsers"), ("pub-fn", "public")):
        await client.post("/tasks/v1/functions", json=function_body(name, executionOptions={"permissionMode": mode}),
                          headers=headers)
    nobody = await create_user(auth, [])
    scoped = await create_user(auth, ["EXECUTE_TASK_FUNCTION:req-fn"])
    assert_error(await client.post("/tasks/v1/functions/req-fn/execute", json={}), 104, 401)
    assert_error(await client.post("/tasks/v1/functions/req-fn/execute", json={}, headers=nobody["headers"]), 10, 401)
    assert (await client.post("/tasks/v1/functions/req-fn/execute", json={},
                              headers=scoped["headers"])).status_code == 200
    assert_error(await client.post("/tasks/v1/functions/all-fn/execute", json={}), 104, 401)
    assert (await client.post("/tasks/v1/functions/all-fn/execute", json={},
                              headers=nobody["headers"])).status_code == 200
    public = await client.post("/tasks/v1/functions/pub-fn/execute", json={})
    assert public.status_code == 200
    assert "createdByUserId" not in public.json()


async def test_execute_concurrency_cap(settings, pool, admin) -> None:
    capped = settings.model_copy(update={"direct_execution_max_concurrency": 1})
    application = create_app(Health(), capped, pool)
    slow = "import time\n\ndef handle(task, context):\n    time.sleep(float(task['data'].get('s', 0)))\n    return 1\n"
    headers = admin["headers"]
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        await client.post("/tasks/v1/functions", json=function_body("slow-fn", slow), headers=headers)
        await client.post("/tasks/v1/functions/slow-fn/execute", json={}, headers=headers)  # starts the runtime
        first = asyncio.create_task(client.post("/tasks/v1/functions/slow-fn/execute", json={"data": {"s": 1.5}},
                                                headers=headers))
        await wait_for(lambda: _running_task(capped), timeout=10, interval=0.02, message="the slow run to start")
        assert_error(await client.post("/tasks/v1/functions/slow-fn/execute", json={}, headers=headers), 1403, 400)
        assert (await first).status_code == 200


async def _running_task(settings) -> bool:
    rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE status = 'inProgress'")
    return rows[0]["n"] > 0


async def test_function_logs_deprecated(client, admin) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("log-fn"), headers=headers)
    await client.post("/tasks/v1/functions/log-fn/execute", json={}, headers=headers)
    window = "eventTimestamp>=2000-01-01T00:00:00.000Z&eventTimestamp<=2000-01-01T12:00:00.000Z"
    assert (await client.get(f"/tasks/v1/functions/log-fn/logs?{window}", headers=headers)).json()["data"] == []
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    end = (now + timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = (await client.get(f"/tasks/v1/functions/log-fn/logs?eventTimestamp>={start}&eventTimestamp<={end}",
                             headers=headers)).json()
    assert len(body["data"]) == 1
    assert set(body["data"][0]) == {"message", "eventTimestamp"}
    assert_error(await client.get("/tasks/v1/functions/log-fn/logs", headers=headers), 20, 400)
    assert_error(await client.get(f"/tasks/v1/functions/log-fn/logs?eventTimestamp>={start}", headers=headers),
                 20, 400)
    wide = "eventTimestamp>=2000-01-01T00:00:00.000Z&eventTimestamp<=2000-01-03T00:00:00.000Z"
    assert_error(await client.get(f"/tasks/v1/functions/log-fn/logs?{wide}", headers=headers), 19, 400)
    assert_error(await client.get(f"/tasks/v1/functions/none-fn/logs?{window}", headers=headers), 16, 404)
