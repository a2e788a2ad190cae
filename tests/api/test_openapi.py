"""The OpenAPI document: served by the application and kept in docs/openapi.json."""

from __future__ import annotations

from pathlib import Path

from taskservice.api.openapi import openapi_document, render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_checked_in_document_is_current() -> None:
    assert DOCUMENT.read_bytes() == render(openapi_document()), (
        "docs/openapi.json is out of date; run: python -m taskservice.api.openapi docs/openapi.json"
    )


async def test_served_document_matches(client) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == openapi_document()


def test_document_covers_the_contract() -> None:
    paths = openapi_document()["paths"]
    expected = {
        "/tasks/v1/": {"get", "post"}, "/tasks/v1/{task_id}/cancel": {"post"}, "/tasks/v1/{task_id}/logs": {"get"},
        "/tasks/v1/redrive": {"post"},
        "/tasks/v1/functions/": {"get", "post"}, "/tasks/v1/functions/{name}": {"get", "put", "delete"},
        "/tasks/v1/functions/{name}/enable": {"post"}, "/tasks/v1/functions/{name}/disable": {"post"},
        "/tasks/v1/functions/{name}/execute": {"post"}, "/tasks/v1/functions/{name}/logs": {"get"},
        "/tasks/v1/schedules": {"get", "post"}, "/tasks/v1/schedules/{schedule_id}": {"delete"},
        "/tasks/v1/api/{name}/{path}": {"get", "post", "put", "delete", "patch", "options", "head"},
        "/tasks/v1/apiRequests": {"get"}, "/tasks/v1/apiRequests/{request_id}/logs": {"get"},
        "/dispatchers/v1/": {"get", "post"}, "/dispatchers/v1/{dispatcher_id}": {"put", "delete"},
        "/dispatchers/v1/{dispatcher_id}/actions": {"post"},
        "/dispatchers/v1/{dispatcher_id}/actions/{action_id}": {"put", "delete"},
        "/auth/v2/oauth2/tokens": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
