"""Every error of the ExtraHorizon catalogue is produced, with its code, name and HTTP status."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from taskservice.api.app import create_app
from taskservice.api.errors import catalogue
from taskservice.auth.hashing import new_token, token_digest
from taskservice.health import Health
from taskservice.ids import new_object_id
from tests.api.helpers import API_HANDLER, FAIL_HANDLER, create_user, function_body
from tests.support import fetch, wait_for

SLOW = "import time\n\ndef handle(event, context):\n    slow = event.get('rawPath') == '/slow' or event.get('data', {}).get('slow')\n" \
       "    time.sleep(1.5 if slow else 0)\n    return {'statusCode': 200}\n"


async def test_catalogue_names_and_statuses() -> None:
    expected = {
        1: ("SERVER_EXCEPTION", 500), 10: ("NO_PERMISSION_EXCEPTION", 401), 12: ("ID_FORMAT_EXCEPTION", 400),
        13: ("EMPTY_BODY_EXCEPTION", 400), 14: ("MISSING_REQUIRED_FIELDS_EXCEPTION", 400),
        15: ("FIELD_FORMAT_EXCEPTION", 400), 16: ("RESOURCE_UNKNOWN_EXCEPTION", 404),
        17: ("RESOURCE_ALREADY_EXISTS_EXCEPTION", 400), 19: ("INVALID_RQL_EXCEPTION", 400),
        20: ("EMPTY_RQL_EXCEPTION", 400), 22: ("BODY_FORMAT_EXCEPTION", 400), 27: ("ILLEGAL_STATE_EXCEPTION", 400),
        104: ("USER_NOT_AUTHENTICATED_EXCEPTION", 401), 117: ("ACCESS_TOKEN_UNKNOWN_EXCEPTION", 401),
        118: ("ACCESS_TOKEN_EXPIRED_EXCEPTION", 401), 1401: ("INVALID_FUNCTION_CODE_EXCEPTION", 400),
        1402: ("INVALID_FUNCTION_CONFIGURATION_EXCEPTION", 400), 1403: ("CONCURRENT_EXECUTION_LIMIT_EXCEPTION", 400),
        1404: ("TIME_LIMIT_EXCEEDS_DIRECT_EXECUTION_MAXIMUM_EXCEPTION", 400),
        1405: ("LAMBDA_INVOCATION_EXCEPTION", 400), 1406: ("LAMBDA_RUNTIME_EXCEPTION", 400),
        1407: ("INVALID_FUNCTION_NAME_EXCEPTION", 400), 1408: ("NO_TASK_LOGS_FOUND", 400),
        1409: ("INVALID_API_FUNCTION_RESULT", 400), 1411: ("TIME_LIMIT_EXCEEDS_API_FUNCTION_MAXIMUM_EXCEPTION", 400),
        1412: ("CONCURRENT_API_FUNCTION_LIMIT_EXCEPTION", 400), 1413: ("NO_API_REQUEST_LOGS_FOUND", 400),
        None: ("ENDPOINT_EXCEPTION", 405),
    }
    assert {cls.code: (cls.name, cls.status) for cls in catalogue()} == expected


async def test_every_catalogue_error_is_produced(settings, pool, auth, admin, monkeypatch) -> None:
    capped = settings.model_copy(update={"direct_execution_max_concurrency": 1, "api_function_max_concurrency": 1})
    application = create_app(Health(), capped, pool)
    produced: dict[int | None, tuple[str, int]] = {}
    headers = admin["headers"]

    def record(response: httpx.Response, expected_code: int | None) -> None:
        body = response.json()
        assert body.get("code") == expected_code, (expected_code, response.status_code, body)
        produced[body.get("code")] = (body["name"], response.status_code)

    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application, raise_app_exceptions=False),
            base_url="http://testserver") as client:
        async def call(method: str, path: str, code: int | None, **options: Any) -> None:
            options.setdefault("headers", headers)
            record(await client.request(method, path, **options), code)

        for name, handler, extra in (("echo-fn", None, {}), ("fail-fn", FAIL_HANDLER, {}),
                                     ("api-fn", API_HANDLER, {}), ("long-fn", None, {"timeLimit": 60}),
                                     ("slow-fn", SLOW, {}), ("quiet-fn", "def handle(e, c):\n    return {'statusCode': 200}\n", {}),
                                     ("nohandler-fn", "x = 1\n", {})):
            body = function_body(name, handler, **extra) if handler else function_body(name, **extra)
            assert (await client.post("/tasks/v1/functions", json=body, headers=headers)).status_code == 200

        nobody = await create_user(auth, [])
        expired = new_token()
        await auth.insert_token({"id": new_object_id(), "user_id": nobody["id"], "access_lifetime_s": -1,
                                 "access_token_hash": token_digest(expired)})
        waiting = (await client.post("/tasks/v1/", json={"functionName": "echo-fn", "startTimestamp": "2099-01-01T00:00:00Z"},
                                     headers=headers)).json()

        await call("GET", "/tasks/v1/", 10, headers=nobody["headers"])
        await call("POST", "/tasks/v1/nope/cancel", 12, json={})
        await call("POST", "/tasks/v1/", 13)
        await call("POST", "/tasks/v1/", 14, json={"tags": []})
        await call("POST", "/tasks/v1/", 15, json={"functionName": "echo-fn", "tags": "a"})
        await call("POST", "/tasks/v1/", 16, json={"functionName": "absent-fn"})
        await call("POST", "/tasks/v1/functions", 17, json=function_body("echo-fn"))
        await call("GET", "/tasks/v1/?eq(functionName", 19)
        await call("GET", "/tasks/v1/functions/echo-fn/logs", 20)
        await call("POST", "/tasks/v1/", 22, content=b"{", headers={**headers, "Content-Type": "application/json"})
        await client.post(f"/tasks/v1/{waiting['id']}/cancel", json={}, headers=headers)
        await call("POST", f"/tasks/v1/{waiting['id']}/cancel", 27, json={})
        await call("GET", "/tasks/v1/", 104, headers={})
        await call("GET", "/tasks/v1/", 117, headers={"Authorization": "Bearer not-a-token"})
        await call("GET", "/tasks/v1/", 118, headers={"Authorization": f"Bearer {expired}"})
        await call("POST", "/tasks/v1/functions", 1401, json=function_body("new-fn", code=base64.b64encode(b"no").decode()))
        await call("POST", "/tasks/v1/functions", 1402, json=function_body("new-fn", runtime="java21"))
        await call("POST", "/tasks/v1/functions/long-fn/execute", 1404, json={})
        await call("POST", "/tasks/v1/functions/nohandler-fn/execute", 1405, json={})
        await call("POST", "/tasks/v1/functions/fail-fn/execute", 1406, json={})
        await call("POST", "/tasks/v1/functions", 1407, json=function_body("bad/name"))
        quiet = (await client.post("/tasks/v1/functions/quiet-fn/execute", json={}, headers=headers)).json()
        await call("GET", f"/tasks/v1/{quiet['id']}/logs", 1408)
        await call("GET", "/tasks/v1/api/api-fn/bad", 1409)
        await call("GET", "/tasks/v1/api/long-fn/x", 1411)
        await client.get("/tasks/v1/api/quiet-fn/x", headers=headers)
        await wait_for(lambda: _api_requests(settings), timeout=10, message="API request records")
        [record_row] = await fetch(settings, "SELECT id FROM api_requests WHERE function_name = 'quiet-fn'")
        await call("GET", f"/tasks/v1/apiRequests/{record_row['id']}/logs", 1413)
        await call("TRACE", "/tasks/v1/api/api-fn/x", None)

        running = asyncio.create_task(client.post("/tasks/v1/functions/slow-fn/execute", json={"data": {"slow": True}},
                                                  headers=headers))
        await wait_for(lambda: _in_progress(application, "execute"), timeout=10, interval=0.02, message="a slow run")
        await call("POST", "/tasks/v1/functions/echo-fn/execute", 1403, json={})
        await running
        calling = asyncio.create_task(client.post("/tasks/v1/api/slow-fn/slow", headers=headers))
        await wait_for(lambda: _in_progress(application, "api"), timeout=10, interval=0.02, message="a slow call")
        await call("GET", "/tasks/v1/api/api-fn/x", 1412)
        await calling

        async def broken(*_args: Any) -> Any:
            raise RuntimeError("simulated failure")

        monkeypatch.setattr(application.state.api.api, "list_tasks", broken)
        await call("GET", "/tasks/v1/", 1)

    assert produced == {cls.code: (cls.name, cls.status) for cls in catalogue()}


async def _in_progress(application: Any, kind: str) -> bool:
    return application.state.api.executor.running(kind) > 0


async def _api_requests(settings: Any) -> bool:
    rows = await fetch(settings, "SELECT count(*) AS n FROM api_requests WHERE function_name = 'quiet-fn'")
    return rows[0]["n"] > 0
