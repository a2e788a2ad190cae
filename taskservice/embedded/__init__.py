"""Embedded servers for `dev` and `demo` when no database or broker is configured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from taskservice.config import Settings
from taskservice.embedded.services import EmbeddedBroker, EmbeddedPostgres

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def embedded_servers(settings: Settings) -> Iterator[Settings]:
    """Start an embedded server for each of the database and broker that is not configured.

    Yields the settings with the embedded addresses filled in; stops the servers on exit.
    The embedded broker lacks the idempotent producer, so that setting is turned off for it.
    """
    started: list[EmbeddedBroker | EmbeddedPostgres] = []
    updates: dict[str, object] = {}
    try:
        if settings.database_url is None:
            postgres = EmbeddedPostgres(settings.state_dir)
            postgres.start()
            started.append(postgres)
            updates["database_url"] = postgres.dsn
        if settings.kafka_bootstrap_servers is None:
            broker = EmbeddedBroker(settings.state_dir)
            broker.start()
            started.append(broker)
            updates["kafka_bootstrap_servers"] = broker.bootstrap_servers
            updates["kafka_enable_idempotence"] = False
            # Tansu replies to a JoinGroup only after half the session timeout, so a short
            # timeout keeps the first assignment quick.
            updates["kafka_session_timeout_ms"] = 3_000
            updates["kafka_heartbeat_interval_ms"] = 500
        yield settings.model_copy(update=updates)
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - stopping the other server matters more
                logger.exception("cannot stop embedded server", extra={"event": "embedded_stop_failed"})
