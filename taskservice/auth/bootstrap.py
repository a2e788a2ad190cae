"""The first administrator and OAuth2 client, and the refusal of development defaults.

`taskservice dev` creates them when no user exists, with the password from
`admin_password` or else DEV_ADMIN_PASSWORD, and prints how to log in. Other commands
create them only from an explicit `admin_password`, refuse DEV_ADMIN_PASSWORD as that
setting, and refuse to serve HTTP while the administrator still has it as password.
"""

from __future__ import annotations

import logging

from taskservice.auth.hashing import hash_secret, verify_secret
from taskservice.auth.permissions import ALL_PERMISSIONS
from taskservice.config import Settings
from taskservice.errors import ConfigurationError
from taskservice.ids import new_object_id
from taskservice.store.auth_repository import AuthRepository

logger = logging.getLogger(__name__)

DEV_ADMIN_PASSWORD = "taskservice-dev-password"


async def bootstrap_admin(repository: AuthRepository, settings: Settings, *, dev_mode: bool) -> str | None:
    """Create the administrator and OAuth2 client when no user exists; return login help or None.

    Outside dev mode, raise ConfigurationError when a development default would be used.
    """
    password = settings.admin_password
    if not dev_mode:
        if password == DEV_ADMIN_PASSWORD:
            raise ConfigurationError(
                "admin_password is the development default; set TASKSERVICE_ADMIN_PASSWORD to another password"
            )
        await _refuse_dev_password(repository, settings.admin_email)
    if await repository.count_users() > 0:
        return None
    if password is None:
        if not dev_mode:
            logger.warning("no user exists; set admin_password or run `taskservice users create`",
                           extra={"event": "no_users"})
            return None
        password = DEV_ADMIN_PASSWORD
    await repository.insert_user(new_object_id(), settings.admin_email, hash_secret(password), ALL_PERMISSIONS)
    if await repository.get_oauth2_client(settings.oauth2_client_id) is None:
        await repository.insert_oauth2_client(new_object_id(), settings.oauth2_client_id, None, "bootstrap client")
    logger.info("created administrator %s and OAuth2 client %s", settings.admin_email, settings.oauth2_client_id,
                extra={"event": "admin_created"})
    return login_help(settings, password if dev_mode else "<admin_password>")


async def _refuse_dev_password(repository: AuthRepository, email: str) -> None:
    user = await repository.get_user_by_email(email)
    if user is not None and verify_secret(user["password_hash"], DEV_ADMIN_PASSWORD):
        raise ConfigurationError(
            f"user {email} still has the development password; change it with "
            f"`taskservice users set-password {email}` before serving outside dev"
        )


def login_help(settings: Settings, password: str) -> str:
    """Return instructions to log in with the official SDK or curl."""
    base = f"http://localhost:{settings.http_port}"
    return (
        f"Log in as {settings.admin_email} with password {password!r}:\n"
        f"  const exh = createOAuth2Client({{ host: '{base}', clientId: '{settings.oauth2_client_id}' }});\n"
        f"  await exh.auth.authenticate({{ username: '{settings.admin_email}', password: '{password}' }});\n"
        f"or: curl -s {base}/auth/v2/oauth2/tokens -H 'Content-Type: application/json' -d "
        f"'{{\"grant_type\": \"password\", \"client_id\": \"{settings.oauth2_client_id}\", "
        f"\"username\": \"{settings.admin_email}\", \"password\": \"{password}\"}}'"
    )


async def bootstrap(settings: Settings, *, dev_mode: bool) -> None:
    """Run bootstrap_admin on its own pool and print the login help when a user was created."""
    from taskservice.store.db import create_pool

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="bootstrap")
    try:
        help_text = await bootstrap_admin(AuthRepository(pool), settings, dev_mode=dev_mode)
    finally:
        await pool.close()
    if help_text:
        print(help_text, flush=True)
