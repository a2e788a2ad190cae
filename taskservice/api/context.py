"""What the route handlers share: settings, repositories, the token service, the executor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from taskservice.auth.tokens import TokenService
from taskservice.config import Settings
from taskservice.store.api_repository import ApiRepository
from taskservice.store.auth_repository import AuthRepository
from taskservice.store.db import Pool
from taskservice.store.repository import Repository

if TYPE_CHECKING:
    from taskservice.api.execution import Executor


@dataclass
class ApiContext:
    """State of the API for one application instance."""

    settings: Settings
    pool: Pool
    repository: Repository
    api: ApiRepository
    auth: AuthRepository
    tokens: TokenService
    executor: Executor


def context_of(request: Request) -> ApiContext:
    """Return the ApiContext of the application serving request."""
    return request.app.state.api  # type: ignore[no-any-return]
