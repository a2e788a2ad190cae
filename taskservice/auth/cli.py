"""The `users`, `tokens` and `clients` commands of the `taskservice` command line.

The database and hashing modules are imported when a command runs, so that building the
parser, which every command does, stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from typing import TYPE_CHECKING

from taskservice.auth.permissions import ALL_PERMISSIONS, check_permission_name
from taskservice.config import Settings
from taskservice.errors import AlreadyExistsError, ServiceError
from taskservice.ids import new_object_id

if TYPE_CHECKING:
    from taskservice.store.auth_repository import AuthRepository

DEFAULT_API_TOKEN_DAYS = 365.0


def add_parsers(commands: Any) -> None:
    """Add the users, tokens and clients sub-commands to the top-level parser's subparsers."""
    users = commands.add_parser("users", help="manage API users and their permissions").add_subparsers(
        dest="action", required=True)
    create = users.add_parser("create", help="create a user; the password is read from standard input")
    create.add_argument("email", help="email, the username of the password grant")
    create.add_argument("--permission", action="append", default=[],
                        help="permission name, e.g. VIEW_TASKS or EXECUTE_TASK_FUNCTION:my-fn; repeatable")
    create.add_argument("--admin", action="store_true", help="grant every permission")
    users.add_parser("list", help="list users and their permissions")
    for action, text in (("grant", "add permissions to a user"), ("revoke", "remove permissions from a user")):
        change = users.add_parser(action, help=text)
        change.add_argument("email")
        change.add_argument("permission", nargs="+", help="permission names")
    password = users.add_parser("set-password", help="replace a user's password; read from standard input")
    password.add_argument("email")
    delete = users.add_parser("delete", help="delete a user and its tokens")
    delete.add_argument("email")

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(dest="action", required=True)
    create_token = tokens.add_parser("create", help="create a bearer token for a user and print it once")
    create_token.add_argument("email")
    create_token.add_argument("--days", type=float, default=DEFAULT_API_TOKEN_DAYS,
                              help=f"lifetime in days (default {DEFAULT_API_TOKEN_DAYS:g})")
    create_token.add_argument("--description", help="what the token is for")
    list_tokens = tokens.add_parser("list", help="list tokens (never their values)")
    list_tokens.add_argument("--email", help="only the tokens of this user")
    revoke = tokens.add_parser("revoke", help="delete a token by id")
    revoke.add_argument("id")

    clients = commands.add_parser("clients", help="manage OAuth2 clients").add_subparsers(
        dest="action", required=True)
    create_client = clients.add_parser("create", help="create an OAuth2 client")
    create_client.add_argument("client_id")
    create_client.add_argument("--name", default="", help="display name")
    create_client.add_argument("--with-secret", action="store_true",
                               help="generate a client secret and print it once (confidential client)")
    clients.add_parser("list", help="list OAuth2 clients")
    delete_client = clients.add_parser("delete", help="delete a client and the tokens issued to it")
    delete_client.add_argument("client_id")


def _read_password(prompt: str) -> str:
    password = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise ServiceError("the password must have at least 8 characters")
    return password


def _permissions(names: list[str]) -> list[str]:
    try:
        return [check_permission_name(name) for name in names]
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


async def _with_repository(settings: Settings, work: Callable[[AuthRepository], Awaitable[int]]) -> int:
    from taskservice.store.auth_repository import AuthRepository
    from taskservice.store.db import create_pool

    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL")
    pool = await create_pool(settings.database_url, size=2, role="admin")
    try:
        return await work(AuthRepository(pool))
    finally:
        await pool.close()


async def _users(repository: AuthRepository, args: argparse.Namespace) -> int:
    from taskservice.auth.hashing import hash_secret

    if args.action == "create":
        permissions = list(ALL_PERMISSIONS) if args.admin else _permissions(args.permission)
        password_hash = hash_secret(_read_password("password: "))
        try:
            await repository.insert_user(new_object_id(), args.email, password_hash, permissions)
        except AlreadyExistsError as exc:
            raise ServiceError(f"a user with email {args.email} already exists") from exc
        print(f"created user {args.email} with {len(permissions)} permission(s)")
    elif args.action == "list":
        for row in await repository.list_users():
            print(f"{row['id']}  {row['email']}  {','.join(row['permissions']) or '-'}")
    elif args.action in ("grant", "revoke"):
        user = await repository.get_user_by_email(args.email)
        if user is None:
            raise ServiceError(f"no user with email {args.email}")
        changed = set(_permissions(args.permission))
        current = set(user["permissions"])
        permissions = current | changed if args.action == "grant" else current - changed
        await repository.set_user_permissions(args.email, sorted(permissions))
        print(f"{args.email}: {','.join(sorted(permissions)) or 'no permissions'}")
    elif args.action == "set-password":
        if not await repository.set_user_password(args.email, hash_secret(_read_password("new password: "))):
            raise ServiceError(f"no user with email {args.email}")
        print(f"changed the password of {args.email}")
    elif args.action == "delete":
        if not await repository.delete_user(args.email):
            raise ServiceError(f"no user with email {args.email}")
        print(f"deleted user {args.email}")
    return 0


async def _tokens(repository: AuthRepository, args: argparse.Namespace) -> int:
    from taskservice.auth.tokens import create_api_token

    if args.action == "create":
        if args.days <= 0:
            raise ServiceError(f"--days must be positive (got {args.days})")
        try:
            token_id, token = await create_api_token(repository, args.email, args.days * 86_400, args.description)
        except LookupError as exc:
            raise ServiceError(str(exc)) from exc
        print(f"token {token_id} for {args.email}, valid {args.days:g} days; send it as 'Authorization: Bearer <token>':")
        print(token)
    elif args.action == "list":
        for row in await repository.list_tokens(args.email):
            kind = "login" if row["refreshable"] else "api"
            print(f"{row['id']}  {row['email']}  {kind}  expires {row['access_expires_at'].isoformat()}  "
                  f"{row['description'] or ''}".rstrip())
    elif args.action == "revoke":
        if not await repository.delete_token(args.id):
            raise ServiceError(f"no token with id {args.id}")
        print(f"revoked token {args.id}")
    return 0


async def _clients(repository: AuthRepository, args: argparse.Namespace) -> int:
    from taskservice.auth.hashing import hash_secret, new_token

    if args.action == "create":
        secret = new_token() if args.with_secret else None
        try:
            await repository.insert_oauth2_client(new_object_id(), args.client_id,
                                                  hash_secret(secret) if secret else None, args.name or args.client_id)
        except AlreadyExistsError as exc:
            raise ServiceError(f"an OAuth2 client {args.client_id!r} already exists") from exc
        print(f"created OAuth2 client {args.client_id}")
        if secret:
            print(f"client secret (shown once): {secret}")
    elif args.action == "list":
        for row in await repository.list_oauth2_clients():
            kind = "confidential" if row["confidential"] else "public"
            print(f"{row['client_id']}  {kind}  application {row['id']}  {row['name']}")
    elif args.action == "delete":
        if not await repository.delete_oauth2_client(args.client_id):
            raise ServiceError(f"no OAuth2 client {args.client_id!r}")
        print(f"deleted OAuth2 client {args.client_id}")
    return 0


def _command(handler: Callable[[AuthRepository, argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        return asyncio.run(_with_repository(settings, lambda repository: handler(repository, args)))

    return run


COMMANDS = {"users": _command(_users), "tokens": _command(_tokens), "clients": _command(_clients)}
