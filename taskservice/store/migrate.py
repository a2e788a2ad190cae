"""Numbered SQL migrations, applied in order under an advisory lock.

Each file in `migrations/` is named `NNNN_description.sql` and runs in its own
transaction together with its row in `taskservice_migrations`. Replicas that start at
the same time wait on the lock, then find the work done and apply nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from taskservice.errors import ConfigurationError
from taskservice.store.db import Connection, connect

logger = logging.getLogger(__name__)

# An arbitrary constant shared by every replica; pg_advisory_lock takes a bigint.
MIGRATION_LOCK_KEY = 0x7461736B73657276

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS taskservice_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Read the packaged migration files in version order; reject misnamed or duplicate ones."""
    found: dict[int, Migration] = {}
    folder = resources.files("taskservice.store") / "migrations"
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ConfigurationError(
                f"migration file {entry.name!r} must be named NNNN_description.sql (lowercase, digits, _)"
            )
        version = int(match.group(1))
        if version in found:
            raise ConfigurationError(f"two migration files have version {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def apply_migrations(connection: Connection) -> list[int]:
    """Apply pending migrations on this connection; return the versions applied."""
    applied_now: list[int] = []
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(_CREATE_TABLE)
        done = {row["version"] for row in await connection.fetch("SELECT version FROM taskservice_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO taskservice_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            logger.info(
                "applied migration %04d_%s",
                migration.version,
                migration.name,
                extra={"event": "migration_applied", "version": migration.version},
            )
            applied_now.append(migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def migrate(dsn: str) -> list[int]:
    """Connect, apply pending migrations and disconnect."""
    connection = await connect(dsn, role="migrate")
    try:
        return await apply_migrations(connection)
    finally:
        await connection.close()
