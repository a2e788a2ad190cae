"""Fixtures of the HTTP API tests: the application on a per-test database, and callers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskservice.api.app import create_app
from taskservice.auth.permissions import ALL_PERMISSIONS
from taskservice.config import Settings
from taskservice.health import Health
from taskservice.ids import new_object_id
from taskservice.store.auth_repository import AuthRepository
from taskservice.store.db import Pool, create_pool
from tests.api.helpers import create_user


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    """A connection pool on the test's database."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=4, role="api-test")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def app(settings: Settings, pool: Pool) -> AsyncIterator[FastAPI]:
    """The API application with its lifespan running."""
    application = create_app(Health(), settings, pool)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the application in process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def auth(pool: Pool) -> AuthRepository:
    """The user and token repository on the test database."""
    return AuthRepository(pool)


@pytest.fixture
async def admin(auth: AuthRepository) -> dict[str, Any]:
    """A user with every permission, logged in through an OAuth2 application."""
    application_id = new_object_id()
    await auth.insert_oauth2_client(application_id, f"client-{application_id}", None, "tests")
    user = await create_user(auth, ALL_PERMISSIONS, application_id=application_id)
    return {**user, "application_id": application_id}


@pytest.fixture
def state_dir(settings: Settings) -> Path:
    """The state folder of the test."""
    return Path(settings.state_dir)
