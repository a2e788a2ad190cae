"""Fault injection and observation shared by the fault-tolerance tests.

Faults touch only what a test owns: its own database on the shared PostgreSQL server
(connections refused and backends terminated, never the server process), its own Tansu
broker (paused with SIGSTOP), and its own service processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from taskservice.config import Settings
from taskservice.embedded.services import EmbeddedBroker
from tests.support import fetch

SERVICE_BACKENDS = """
SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'taskservice-%'
"""


def exh_topic(settings: Settings) -> str:
    """Return the first ingested topic of the ExtraHorizon format."""
    return next(topic for topic, topic_format in settings.topics.items() if topic_format == "exh")


def database_name(settings: Settings) -> str:
    """Return the name of the test's own database."""
    assert settings.database_url is not None
    return settings.database_url.rsplit("/", 1)[1].split("?", 1)[0]


async def status_counts(settings: Settings) -> Counter[str]:
    """Count the task rows in each status."""
    rows = await fetch(settings, "SELECT status, count(*) AS n FROM tasks GROUP BY status")
    return Counter({row["status"]: row["n"] for row in rows})


async def unsent_outbox(settings: Settings) -> int:
    """Count the outbox rows the relay has not published yet."""
    rows = await fetch(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
    return rows[0]["n"]


async def nothing_pending(settings: Settings) -> bool:
    """Return whether no task is new or inProgress and the outbox is fully published."""
    counts = await status_counts(settings)
    return counts["new"] == 0 and counts["inProgress"] == 0 and await unsent_outbox(settings) == 0


def records_by_task(records: list[Any]) -> dict[str, list[Any]]:
    """Group result records by the task id in their value."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for record in records:
        grouped[orjson.loads(record.value)["taskId"]].append(record)
    return grouped


def header(record: Any, name: str) -> bytes | None:
    """Return the value of a record header, or None."""
    return dict(record.headers).get(name)


def copies_differ(copies: list[Any]) -> bool:
    """Return whether copies of one result message differ in value, key or attempt header."""
    first = copies[0]
    return any(copy.value != first.value or copy.key != first.key
               or header(copy, "attempt") != header(first, "attempt") for copy in copies[1:])


def log_text(*paths: Path) -> str:
    """Return the concatenated text of the service log files that exist."""
    return "\n".join(path.read_text(errors="replace") for path in paths if path.exists())


async def wait_for_log(path: Path, text: str, *, timeout: float) -> float:
    """Wait until text appears in the log file; return time.time() when it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return time.time()
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {text!r} in {path}")


# HTTP -------------------------------------------------------------------------------------


def _http_get_blocking(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def http_get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int | None, str]:
    """GET http://127.0.0.1:port/path; return (status, body), or (None, error) without a response."""
    return await asyncio.to_thread(_http_get_blocking, f"http://127.0.0.1:{port}{path}", timeout)


def metric_total(text: str, name: str) -> float | None:
    """Sum every sample of metric name in Prometheus text output; None when it has no sample."""
    values = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            values.append(float(value))
    return sum(values) if values else None


# Database outages -------------------------------------------------------------------------


async def terminate_service_backends(admin: asyncpg.Connection, database: str) -> int:
    """Terminate every service connection to database; return how many were terminated."""
    rows = await admin.fetch(
        f"SELECT pg_terminate_backend(pid) AS done FROM ({SERVICE_BACKENDS}) AS service", database
    )
    return sum(1 for row in rows if row["done"])


async def set_connections_allowed(admin: asyncpg.Connection, database: str, allowed: bool) -> None:
    """Allow or refuse new connections to database (ALTER DATABASE ... ALLOW_CONNECTIONS)."""
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')


@contextlib.asynccontextmanager
async def database_cut_off(admin_dsn: str, settings: Settings, *, terminate_every_s: float = 0.5
                           ) -> AsyncIterator[list[int]]:
    """Cut the service off its database for the duration of the block.

    New connections to the test database are refused and the service's existing
    connections are terminated every terminate_every_s seconds. Yields a list that
    collects how many backends each round terminated. Connections are allowed again on
    exit, whatever happens in the block.
    """
    database = database_name(settings)
    admin = await asyncpg.connect(admin_dsn)
    terminated: list[int] = []
    stop = asyncio.Event()

    async def keep_terminating() -> None:
        while not stop.is_set():
            terminated.append(await terminate_service_backends(admin, database))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=terminate_every_s)

    try:
        await set_connections_allowed(admin, database, False)
        terminator = asyncio.create_task(keep_terminating())
        try:
            yield terminated
        finally:
            stop.set()
            await terminator
    finally:
        await set_connections_allowed(admin, database, True)
        await admin.close()


# A private broker -------------------------------------------------------------------------


@contextlib.contextmanager
def private_broker(folder: Path) -> Iterator[EmbeddedBroker]:
    """Run a Tansu broker for one test, so pausing it affects no other test."""
    broker = EmbeddedBroker(folder)
    broker.start()
    try:
        yield broker
    finally:
        resume(broker)
        broker.stop()


def with_broker(settings: Settings, broker: EmbeddedBroker, **updates: Any) -> Settings:
    """Return settings that point at broker (Tansu lacks the idempotent producer)."""
    return settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers,
                                       "kafka_enable_idempotence": False, **updates})


def pause(broker: EmbeddedBroker) -> None:
    """Stop the broker process with SIGSTOP. Its sockets stay open, but no request gets a response."""
    assert broker.process is not None and broker.process.poll() is None, "the private broker is not running"
    os.kill(broker.process.pid, signal.SIGSTOP)


def resume(broker: EmbeddedBroker) -> None:
    """Resume a broker stopped by pause()."""
    if broker.process is not None and broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)
