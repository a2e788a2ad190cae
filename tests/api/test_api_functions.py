"""API functions (/tasks/v1/api/…) and their API Request records and logs."""

from __future__ import annotations

import asyncio
import base64

import httpx

from taskservice.api.app import create_app
from taskservice.health import Health
from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import API_HANDLER, assert_error, create_user, function_body
from tests.support import fetch, wait_for


async def _deploy(client, admin, name: str = "api-fn", mode: str = "permissionRequired", **fields) -> None:
    body = function_body(name, API_HANDLER, executionOptions={"permissionMode": mode}, **fields)
    response = await client.post("/tasks/v1/functions", json=body, headers=admin["headers"])
    assert response.status_code == 200, response.text


async def test_call_passes_request_and_returns_response(client, admin) -> None:
    await _deploy(client, admin)
    headers = [*admin["headers"].items(), ("x-exh-requesting-user-id", "forged"),
               ("Content-Type", "application/json"), ("x-multi", "a"), ("x-multi", "b")]
    response = await client.post("/tasks/v1/api/api-fn/hello/world?x=1&y=a%20b", content=b'{"k": "v"}',
                                 headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["x-handled-by"] == "api-fn"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["method"] == "POST"
    assert body["rawPath"] == "/hello/world"
    assert body["rawQueryString"] == "?x=1&y=a%20b"
    assert body["body"] == '{"k": "v"}'
    assert body["isBase64Encoded"] is False
    assert body["user"] == admin["id"]
    assert body["application"] == admin["application_id"]
    assert body["authorization"] is None
    assert body["multi"] == "a,b"


async def test_every_method_and_binary_bodies(client, admin) -> None:
    await _deploy(client, admin, mode="public")
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = await client.request(method, "/tasks/v1/api/api-fn/items/1")
        assert response.status_code == 201, (method, response.text)
        assert response.json()["method"] == method
    head = await client.request("HEAD", "/tasks/v1/api/api-fn")
    assert head.status_code == 201
    binary = await client.post("/tasks/v1/api/api-fn/upload", content=b"\x01\xff\x10",
                               headers={"Content-Type": "application/octet-stream"})
    assert binary.json()["isBase64Encoded"] is True
    assert binary.json()["body"] == "\x01\xff\x10"
    root = await client.get("/tasks/v1/api/api-fn")
    assert root.json()["rawPath"] == "/"
    out = await client.get("/tasks/v1/api/api-fn/binary")
    assert out.content == b"\x00\x01\xff"
    assert out.headers["content-type"] == "application/octet-stream"
    assert_error(await client.request("TRACE", "/tasks/v1/api/api-fn/x"), None, 405)


async def test_call_errors(client, admin, auth: AuthRepository) -> None:
    await _deploy(client, admin)
    headers = admin["headers"]
    assert_error(await client.get("/tasks/v1/api/api-fn/bad", headers=headers), 1409, 400)
    body = assert_error(await client.get("/tasks/v1/api/api-fn/crash", headers=headers), 1406, 400)
    assert body["runtimeError"]["name"] == "RuntimeError"
    assert_error(await client.get("/tasks/v1/api/none-fn/x", headers=headers), 16, 404)
    assert_error(await client.get("/tasks/v1/api/api-fn/x"), 104, 401)
    nobody = await create_user(auth, [])
    assert_error(await client.get("/tasks/v1/api/api-fn/x", headers=nobody["headers"]), 10, 401)
    scoped = await create_user(auth, ["EXECUTE_API_FUNCTION:api-fn"])
    assert (await client.get("/tasks/v1/api/api-fn/x", headers=scoped["headers"])).status_code == 201
    await _deploy(client, admin, "all-api-fn", mode="allUsers")
    assert (await client.get("/tasks/v1/api/all-api-fn/x", headers=nobody["headers"])).status_code == 201
    assert_error(await client.get("/tasks/v1/api/all-api-fn/x"), 104, 401)
    await _deploy(client, admin, "slow-api-fn", timeLimit=60)
    assert_error(await client.get("/tasks/v1/api/slow-api-fn/x", headers=headers), 1411, 400)
    await client.post("/tasks/v1/functions/api-fn/disable", json={}, headers=headers)
    assert_error(await client.get("/tasks/v1/api/api-fn/x", headers=headers), 27, 400)
    broken = function_body("broken-api-fn", "import not_a_module\n\ndef handle(r, c):\n    return {}\n")
    await client.post("/tasks/v1/functions", json=broken, headers=headers)
    assert_error(await client.get("/tasks/v1/api/broken-api-fn/x", headers=headers), 1405, 400)


async def test_invalid_response_objects(client, admin) -> None:
    cases = {
        "none": "None",
        "text": "'hello'",
        "low": "{'statusCode': 100}",
        "float": "{'statusCode': 200.5}",
        "header": "{'statusCode': 200, 'headers': {'bad name': 'x'}}",
        "value": "{'statusCode': 200, 'headers': {'x': 5}}",
        "b64": "{'statusCode': 200, 'body': '###', 'isBase64Encoded': True}",
        "flag": "{'statusCode': 200, 'body': 'x', 'isBase64Encoded': 'yes'}",
    }
    handler = "RESULTS = {" + ", ".join(f"'/{key}': {value}" for key, value in cases.items()) + "}\n\n" \
              "def handle(request, context):\n    return RESULTS[request['rawPath']]\n"
    await client.post("/tasks/v1/functions", json=function_body("odd-fn", handler,
                                                                executionOptions={"permissionMode": "public"}),
                      headers=admin["headers"])
    for key in cases:
        assert_error(await client.get(f"/tasks/v1/api/odd-fn/{key}"), 1409, 400)


async def test_api_function_concurrency_cap(settings, pool, admin) -> None:
    capped = settings.model_copy(update={"api_function_max_concurrency": 1})
    application = create_app(Health(), capped, pool)
    slow = "import time\n\ndef handle(request, context):\n    time.sleep(1.5 if request['rawPath'] == '/slow' else 0)\n" \
           "    return {'statusCode': 200}\n"
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        await client.post("/tasks/v1/functions", json=function_body("slow-api", slow,
                                                                    executionOptions={"permissionMode": "public"}),
                          headers=admin["headers"])
        await client.get("/tasks/v1/api/slow-api/warm")
        first = asyncio.create_task(client.get("/tasks/v1/api/slow-api/slow"))
        await wait_for(lambda: _busy(application), timeout=10, interval=0.02, message="the slow call to start")
        assert_error(await client.get("/tasks/v1/api/slow-api/second"), 1412, 400)
        assert (await first).status_code == 200


async def _busy(application) -> bool:
    return application.state.api.executor.running("api") > 0


async def test_api_request_records_and_logs(client, admin, settings) -> None:
    await _deploy(client, admin)
    headers = admin["headers"]
    await client.get("/tasks/v1/api/api-fn/first?q=1", headers=headers)
    await client.get("/tasks/v1/api/api-fn/bad", headers=headers)
    await wait_for(lambda: _count(settings, 2), timeout=10, message="2 API request records")
    body = (await client.get("/tasks/v1/apiRequests?sort(timestamp)", headers=headers)).json()
    assert body["page"]["total"] == 2
    first, bad = body["data"]
    assert first["functionName"] == "api-fn"
    assert first["method"] == "GET"
    assert first["path"] == "/first?q=1"
    assert first["statusCode"] == 201
    assert first["userId"] == admin["id"]
    assert first["duration"] >= 0
    assert "error" not in first
    assert bad["statusCode"] == 400
    assert bad["error"]["type"] == "response"
    filtered = (await client.get("/tasks/v1/apiRequests/?eq(statusCode,400)", headers=headers)).json()
    assert [item["id"] for item in filtered["data"]] == [bad["id"]]
    logs = (await client.get(f"/tasks/v1/apiRequests/{first['id']}/logs", headers=headers)).json()
    assert "api call GET /first" in logs["data"][0]["message"]
    assert_error(await client.get("/tasks/v1/apiRequests/" + "d" * 24 + "/logs", headers=headers), 16, 404)
    assert_error(await client.get("/tasks/v1/apiRequests/zzz/logs", headers=headers), 12, 400)
    assert_error(await client.get("/tasks/v1/apiRequests?eq(nope,1)", headers=headers), 19, 400)


async def test_api_request_without_logs(client, admin, settings) -> None:
    quiet = "def handle(request, context):\n    return {'statusCode': 204}\n"
    await client.post("/tasks/v1/functions", json=function_body("quiet-api", quiet), headers=admin["headers"])
    response = await client.delete("/tasks/v1/api/quiet-api/x", headers=admin["headers"])
    assert response.status_code == 204
    await wait_for(lambda: _count(settings, 1), timeout=10, message="1 API request record")
    [record] = (await client.get("/tasks/v1/apiRequests", headers=admin["headers"])).json()["data"]
    assert_error(await client.get(f"/tasks/v1/apiRequests/{record['id']}/logs", headers=admin["headers"]), 1413, 400)


async def test_request_body_limit(settings, pool, admin) -> None:
    small = settings.model_copy(update={"api_function_max_payload_bytes": 1024, "http_max_body_bytes": 4096})
    application = create_app(Health(), small, pool)
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        await client.post("/tasks/v1/functions", json=function_body("api-fn", API_HANDLER), headers=admin["headers"])
        assert_error(await client.post("/tasks/v1/api/api-fn/x", content=b"x" * 2000, headers=admin["headers"]),
                     15, 400)
        assert_error(await client.post("/tasks/v1/", content=b"x" * 5000, headers=admin["headers"]), 15, 413)
        encoded = base64.b64encode(b"y" * 600).decode()
        response = await client.post("/tasks/v1/api/api-fn/x", content=encoded, headers=admin["headers"])
        assert response.status_code == 201


async def _count(settings, expected: int) -> bool:
    rows = await fetch(settings, "SELECT count(*) AS n FROM api_requests")
    return rows[0]["n"] >= expected
