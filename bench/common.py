"""Shared set-up of the benchmarks: servers, a fresh database, settings, timing helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskservice.config import Settings  # noqa: E402
from taskservice.embedded.services import EmbeddedBroker, resolve_tansu_binary  # noqa: E402
from taskservice.store.migrate import migrate  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_FUNCTIONS = ROOT / "bench" / "functions"


def _proc_field(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def machine() -> dict[str, object]:
    """Describe the machine the figures come from."""
    memory_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {"cpus": os.cpu_count(), "cpu": _proc_field("/proc/cpuinfo", "model name") or "unknown",
            "memory_gib": round(int(memory_kb.split()[0]) / 2**20, 1) if memory_kb else None,
            "python": platform.python_version(), "system": platform.platform()}


async def postgres_version() -> str:
    """Return the version of the PostgreSQL server at ADMIN_DSN."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        return await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()


def broker_version() -> str:
    """Return the version of the broker that broker() starts, or the configured address."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return f"configured broker at {configured}"
    binary = resolve_tansu_binary(Path(tempfile.mkdtemp(prefix="taskservice-bench-")))
    completed = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return completed.stdout.strip() or "tansu (version unknown)"


@contextlib.contextmanager
def broker() -> Iterator[tuple[str, bool]]:
    """Yield (bootstrap servers, is Tansu): KAFKA_BOOTSTRAP_SERVERS or a private Tansu broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, os.environ.get("TASKSERVICE_TEST_BROKER") == "tansu"
        return
    server = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="taskservice-bench-")))
    server.start()
    try:
        yield server.bootstrap_servers, True
    finally:
        server.stop()


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@contextlib.asynccontextmanager
async def fresh_database(migrated: bool = True) -> AsyncIterator[str]:
    """Create a database for one benchmark and drop it afterwards."""
    name = f"taskservice_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(ADMIN_DSN, name)
    try:
        if migrated:
            await migrate(dsn)
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def bench_settings(dsn: str, bootstrap: str, is_tansu: bool, **overrides: object) -> Settings:
    """Settings for a benchmark run, with topics private to it."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "database_url": dsn, "kafka_bootstrap_servers": bootstrap, "kafka_enable_idempotence": not is_tansu,
        "kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 500, "kafka_fetch_max_wait_ms": 5,
        "topics": {f"bench-exh-{suffix}": "exh", f"bench-doc-{suffix}": "cloudevents"},
        "results_topic": f"bench-results-{suffix}", "dead_letter_topic": f"bench-dlq-{suffix}",
        "consumer_group": f"bench-{suffix}", "functions_dir": BENCH_FUNCTIONS, "http_port": 0,
        "state_dir": Path(tempfile.mkdtemp(prefix="taskservice-bench-state-")), "log_level": "WARNING",
        "log_format": "json",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_environment(settings: Settings) -> dict[str, str]:
    """Return this process's environment without service settings, plus those of settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSERVICE_")}
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return env | settings.to_environment()


def start_roles(settings: Settings, roles: str) -> subprocess.Popen[bytes]:
    """Start `taskservice run --role roles` as a child process."""
    return subprocess.Popen([sys.executable, "-m", "taskservice.cli", "run", "--role", roles],
                            env=settings_environment(settings), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a child with SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def median(values: list[float]) -> float:
    return statistics.median(values)


async def wait_until(check, timeout: float, interval: float = 0.05) -> None:
    """Poll an async check until it returns True, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached in time")
        await asyncio.sleep(interval)
