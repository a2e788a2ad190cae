"""Authentication: the OAuth2 token endpoint, bearer tokens, bootstrap and the users/tokens CLI."""

from __future__ import annotations

import asyncio
import base64
import io
import sys

import pytest

from taskservice import cli
from taskservice.auth.bootstrap import DEV_ADMIN_PASSWORD, bootstrap_admin
from taskservice.auth.hashing import hash_secret, new_token, token_digest
from taskservice.auth.permissions import ALL_PERMISSIONS, check_permission_name
from taskservice.auth.tokens import AUTHENTICATION_CACHE_S
from taskservice.errors import ConfigurationError
from taskservice.ids import new_object_id
from taskservice.store.auth_repository import AuthRepository
from tests.api.helpers import assert_error, create_user
from tests.support import fetch, settings_environment, wait_for

TOKENS = "/auth/v2/oauth2/tokens"


async def _client_and_user(auth: AuthRepository, secret: str | None = None) -> tuple[str, dict]:
    client_id = f"client-{new_object_id()}"
    await auth.insert_oauth2_client(new_object_id(), client_id, hash_secret(secret) if secret else None, "tests")
    user = await create_user(auth, ["VIEW_TASKS"], password="correct horse")
    return client_id, user


async def test_password_grant_and_refresh(client, auth) -> None:
    client_id, user = await _client_and_user(auth)
    response = await client.post(TOKENS, json={"grant_type": "password", "client_id": client_id,
                                               "username": user["email"], "password": "correct horse"})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["user_id"] == user["id"]
    assert response.headers["cache-control"] == "no-store"
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/tasks/v1/", headers=bearer)).status_code == 200

    refreshed = await client.post(TOKENS, data={"grant_type": "refresh_token", "client_id": client_id,
                                                "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    new_bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (await client.get("/tasks/v1/", headers=new_bearer)).status_code == 200
    assert (await client.get("/tasks/v1/", headers=bearer)).status_code == 200
    reused = await client.post(TOKENS, json={"grant_type": "refresh_token", "client_id": client_id,
                                             "refresh_token": tokens["refresh_token"]})
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


async def test_token_endpoint_errors(client, auth) -> None:
    client_id, user = await _client_and_user(auth)

    async def post(**body) -> tuple[int, str]:
        response = await client.post(TOKENS, json=body)
        return response.status_code, response.json()["error"]

    assert await post(grant_type="password", client_id=client_id, username=user["email"], password="wrong") == (
        400, "invalid_grant")
    assert await post(grant_type="password", client_id=client_id, username="nobody@example.com", password="x") == (
        400, "invalid_grant")
    assert await post(grant_type="password", client_id="unknown", username=user["email"], password="x") == (
        401, "invalid_client")
    assert await post(grant_type="password", username=user["email"], password="x") == (401, "invalid_client")
    assert await post(grant_type="client_credentials", client_id=client_id) == (400, "unsupported_grant_type")
    assert await post(client_id=client_id) == (400, "invalid_request")
    assert await post(grant_type="password", client_id=client_id) == (400, "invalid_request")
    assert await post(grant_type="refresh_token", client_id=client_id) == (400, "invalid_request")
    assert await post(grant_type="refresh_token", client_id=client_id, refresh_token="nope") == (400, "invalid_grant")
    response = await client.post(TOKENS, content=b"[1]", headers={"Content-Type": "application/json"})
    assert response.json()["error"] == "invalid_request"


async def test_confidential_client_with_basic_auth(client, auth) -> None:
    client_id, user = await _client_and_user(auth, secret="client-secret")
    basic = base64.b64encode(f"{client_id}:client-secret".encode()).decode()
    body = {"grant_type": "password", "username": user["email"], "password": "correct horse"}
    response = await client.post(TOKENS, json=body, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    wrong = base64.b64encode(f"{client_id}:wrong".encode()).decode()
    response = await client.post(TOKENS, json=body, headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401
    response = await client.post(TOKENS, json={**body, "client_id": client_id})
    assert response.json()["error"] == "invalid_client"
    response = await client.post(TOKENS, json=body, headers={"Authorization": "Basic !!!"})
    assert response.json()["error"] == "invalid_client"


async def test_expired_and_unknown_tokens(client, auth, settings) -> None:
    user = await create_user(auth, ["VIEW_TASKS"])
    token = new_token()
    await auth.insert_token({"id": new_object_id(), "user_id": user["id"], "access_token_hash": token_digest(token),
                             "access_lifetime_s": -1})
    assert_error(await client.get("/tasks/v1/", headers={"Authorization": f"Bearer {token}"}), 118, 401)
    assert_error(await client.get("/tasks/v1/", headers={"Authorization": "Bearer unknown"}), 117, 401)
    assert_error(await client.get("/tasks/v1/", headers={"Authorization": "Bearer "}), 104, 401)
    rows = await fetch(settings, "SELECT access_token_hash FROM tokens")
    assert token not in {row["access_token_hash"] for row in rows}


async def test_bootstrap_dev_admin(auth, settings) -> None:
    help_text = await bootstrap_admin(auth, settings, dev_mode=True)
    assert help_text is not None and DEV_ADMIN_PASSWORD in help_text
    user = await auth.get_user_by_email(settings.admin_email)
    assert set(user["permissions"]) == set(ALL_PERMISSIONS)
    assert await auth.get_oauth2_client(settings.oauth2_client_id) is not None
    assert await bootstrap_admin(auth, settings, dev_mode=True) is None
    with pytest.raises(ConfigurationError, match="development password"):
        await bootstrap_admin(auth, settings, dev_mode=False)


async def test_bootstrap_outside_dev(auth, settings) -> None:
    with pytest.raises(ConfigurationError, match="development default"):
        await bootstrap_admin(auth, settings.model_copy(update={"admin_password": DEV_ADMIN_PASSWORD}), dev_mode=False)
    assert await bootstrap_admin(auth, settings, dev_mode=False) is None
    assert await auth.count_users() == 0
    chosen = settings.model_copy(update={"admin_password": "a real password"})
    assert await bootstrap_admin(auth, chosen, dev_mode=False) is not None
    assert await bootstrap_admin(auth, chosen, dev_mode=False) is None


async def test_bootstrap_login_with_created_admin(client, auth, settings) -> None:
    await bootstrap_admin(auth, settings, dev_mode=True)
    response = await client.post(TOKENS, json={"grant_type": "password", "client_id": settings.oauth2_client_id,
                                               "username": settings.admin_email, "password": DEV_ADMIN_PASSWORD})
    assert response.status_code == 200, response.text


def _run_cli(monkeypatch, settings, *argv: str, stdin: str = "") -> tuple[int, str]:
    for key, value in settings_environment(settings).items():
        if key.startswith("TASKSERVICE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    output = io.StringIO()
    monkeypatch.setattr(sys, "stdout", output)
    code = cli.main(list(argv))
    return code, output.getvalue()


async def test_users_and_tokens_cli(monkeypatch, settings, client, auth) -> None:
    def run(*argv: str, stdin: str = "") -> tuple[int, str]:
        return _run_cli(monkeypatch, settings, *argv, stdin=stdin)

    async def in_thread(*argv: str, stdin: str = "") -> tuple[int, str]:
        return await asyncio.to_thread(run, *argv, stdin=stdin)

    code, output = await in_thread("users", "create", "ops@example.com", "--permission", "VIEW_TASKS",
                                   stdin="long enough password\n")
    assert code == 0, output
    assert (await in_thread("users", "create", "ops@example.com", stdin="long enough password\n"))[0] == 1
    assert (await in_thread("users", "create", "x@example.com", "--permission", "NOT_A_PERMISSION",
                            stdin="long enough password\n"))[0] == 1
    assert (await in_thread("users", "create", "y@example.com", stdin="short\n"))[0] == 1
    code, output = await in_thread("users", "grant", "ops@example.com", "EXECUTE_TASK_FUNCTION:my-fn")
    assert "EXECUTE_TASK_FUNCTION:my-fn" in output
    code, output = await in_thread("users", "revoke", "ops@example.com", "VIEW_TASKS")
    assert "VIEW_TASKS" not in output
    await in_thread("users", "grant", "ops@example.com", "VIEW_TASKS")
    code, output = await in_thread("users", "list")
    assert "ops@example.com" in output
    code, output = await in_thread("tokens", "create", "ops@example.com", "--days", "1", "--description", "ci")
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    assert (await client.get("/tasks/v1/", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    code, output = await in_thread("tokens", "list", "--email", "ops@example.com")
    token_id = output.split()[0]
    assert " api " in output
    assert output.rstrip().endswith("ci")
    assert (await in_thread("tokens", "revoke", token_id))[0] == 0

    async def revoked() -> bool:
        return (await client.get("/tasks/v1/", headers={"Authorization": f"Bearer {token}"})).status_code == 401

    # Callers are kept in memory for AUTHENTICATION_CACHE_S, so revocation takes effect within it.
    await wait_for(revoked, timeout=AUTHENTICATION_CACHE_S + 3, message="the revoked token to be refused")
    assert_error(await client.get("/tasks/v1/", headers={"Authorization": f"Bearer {token}"}), 117, 401)
    assert (await in_thread("tokens", "create", "nobody@example.com"))[0] == 1
    code, output = await in_thread("clients", "create", "my-app", "--with-secret")
    assert "client secret" in output
    code, output = await in_thread("clients", "list")
    assert "my-app  confidential" in output
    assert (await in_thread("clients", "delete", "my-app"))[0] == 0
    assert (await in_thread("users", "set-password", "ops@example.com", stdin="another long password\n"))[0] == 0
    assert (await in_thread("users", "delete", "ops@example.com"))[0] == 0
    assert (await in_thread("users", "delete", "ops@example.com"))[0] == 1


def test_permission_names() -> None:
    assert check_permission_name("VIEW_TASKS") == "VIEW_TASKS"
    assert check_permission_name("EXECUTE_API_FUNCTION:my-fn") == "EXECUTE_API_FUNCTION:my-fn"
    for bad in ("VIEW_EVERYTHING", "VIEW_TASKS:my-fn", "EXECUTE_TASK_FUNCTION:bad name"):
        with pytest.raises(ValueError):
            check_permission_name(bad)
