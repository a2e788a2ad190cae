"""Helpers of the HTTP API tests: function zips, users with tokens, and response checks."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Sequence
from typing import Any

import httpx

from taskservice.auth.hashing import hash_secret, new_token, token_digest
from taskservice.ids import new_object_id
from taskservice.store.auth_repository import AuthRepository

ECHO_HANDLER = '''
import logging

def handle(task, context):
    context.logger.info("running %s", task["id"])
    return {"echo": task["data"], "functionName": task["functionName"]}
'''

FAIL_HANDLER = '''
def handle(task, context):
    print("about to fail")
    raise ValueError("bad input " + str(task["data"].get("n")))
'''

API_HANDLER = '''
import base64, json

def handle(request, context):
    context.logger.info("api call %s %s", request["requestContext"]["http"]["method"], request["rawPath"])
    body = request["body"]
    if request["isBase64Encoded"]:
        body = base64.b64decode(body).decode("latin-1")
    if request["rawPath"] == "/bad":
        return {"statusCode": 600}
    if request["rawPath"] == "/crash":
        raise RuntimeError("api crash")
    if request["rawPath"] == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(b"\\x00\\x01\\xff").decode(), "isBase64Encoded": True}
    return {"statusCode": 201, "headers": {"x-handled-by": "api-fn"},
            "body": {"method": request["requestContext"]["http"]["method"], "rawPath": request["rawPath"],
                     "rawQueryString": request["rawQueryString"], "body": body,
                     "isBase64Encoded": request["isBase64Encoded"],
                     "user": request["headers"].get("x-exh-requesting-user-id"),
                     "application": request["headers"].get("x-exh-requesting-application-id"),
                     "authorization": request["headers"].get("authorization"),
                     "multi": request["headers"].get("x-multi")}}
'''


def zip_code(files: dict[str, str | bytes]) -> str:
    """Zip files (name → content) and return the archive as base64 text."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return base64.b64encode(buffer.getvalue()).decode()


def function_body(name: str, handler: str = ECHO_HANDLER, **fields: Any) -> dict[str, Any]:
    """Build a function create body with handler.py as code."""
    body: dict[str, Any] = {"name": name, "code": zip_code({"handler.py": handler}), "entryPoint": "handler.handle",
                            "runtime": "python3.11", "timeLimit": 10}
    body.update(fields)
    return body


async def create_user(auth: AuthRepository, permissions: Sequence[str], *, email: str | None = None,
                      password: str = "secret-password", application_id: str | None = None) -> dict[str, Any]:
    """Create a user with a bearer token; return its id, email, token and Authorization header."""
    user_id = new_object_id()
    email = email or f"user-{user_id}@example.com"
    await auth.insert_user(user_id, email, hash_secret(password), list(permissions))
    token = new_token()
    await auth.insert_token({"id": new_object_id(), "user_id": user_id, "application_id": application_id,
                             "access_token_hash": token_digest(token), "access_lifetime_s": 3600})
    return {"id": user_id, "email": email, "token": token, "headers": {"Authorization": f"Bearer {token}"}}


def assert_error(response: httpx.Response, code: int | None, status: int) -> dict[str, Any]:
    """Check an ExtraHorizon error response; return its body."""
    assert response.status_code == status, response.text
    body = response.json()
    if code is None:
        assert "code" not in body, body
    else:
        assert body["code"] == code, body
    assert isinstance(body["name"], str) and body["name"], body
    assert isinstance(body["message"], str) and body["message"], body
    return body
