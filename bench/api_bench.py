"""Benchmark of the HTTP API: direct-execution overhead and RQL list latency on 1 million tasks.

    .venv/bin/python bench/api_bench.py [--database-url DSN] [--tasks 1000000] [--requests 2000]

It creates (and afterwards drops) the database `taskservice_api_bench` on the server of
--database-url (default: the local PostgreSQL on 127.0.0.1:5432), migrates it, starts
`taskservice run --role http` on a free loopback port in a child process, and measures
from this process over one keep-alive HTTP/1.1 connection (http.client), one request at
a time:

1. POST /tasks/v1/functions/{name}/execute of a no-op function. Overhead is the round
   trip minus the function's own run time (the task's `duration`): HTTP, authentication,
   the task insert, the pipe to the warm runtime process and back, and finish_tasks.
2. GET /tasks/v1/?<filter>&limit(50) on a tasks table filled with one INSERT … SELECT
   generate_series, for a selective filter, a broad one, and the broad one with skipCount().

Every loop is bounded by --requests and by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from taskservice.auth.hashing import new_token, token_digest  # noqa: E402
from taskservice.auth.permissions import ALL_PERMISSIONS  # noqa: E402
from taskservice.store.migrate import migrate  # noqa: E402

DATABASE = "taskservice_api_bench"
NOOP = "def handle(task, context):\n    return None\n"

# 1 million tasks: 20 functions, statuses spread independently of the function, creation
# times one every 0.5 s going back from now, one of 7 tags each.
LOAD_TASKS = """
INSERT INTO tasks (id, function_name, status, data, tags, priority, start_timestamp, creation_timestamp,
                   update_timestamp, status_changed_timestamp, source, attempt)
SELECT lpad(to_hex(g), 24, '0'),
       'fn-' || (g % 20),
       (ARRAY['complete', 'complete', 'complete', 'complete', 'complete', 'complete', 'failed',
              'canceled', 'complete', 'failed'])[1 + (g / 20) % 10],
       jsonb_build_object('n', g, 'kind', CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END),
       ARRAY['t' || (g % 7)],
       g % 5,
       ts, ts, ts, ts, 'api', 1
FROM generate_series(1, $1::integer) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($1::integer - g) * 0.5)) AS t(ts)
"""

QUERIES = {
    "selective filter (10,000 matches): eq(functionName,fn-7)&eq(status,failed)&sort(-creationTimestamp)&limit(50)":
        "?eq(functionName,fn%252D7)&eq(status,failed)&sort(-creationTimestamp)&limit(50)",
    "function filter (50,000 matches): eq(functionName,fn-7)&limit(50)":
        "?eq(functionName,fn%252D7)&limit(50)",
    "broad filter (700,000 matches, exact total): eq(status,complete)&limit(50)":
        "?eq(status,complete)&limit(50)",
    "broad filter with skipCount(): eq(status,complete)&limit(50)&skipCount()":
        "?eq(status,complete)&limit(50)&skipCount()",
}


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"n": len(ordered), "p50_ms": round(quantiles[49] * 1000, 3), "p99_ms": round(quantiles[98] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3)}


async def _prepare_database(admin_dsn: str, tasks: int) -> tuple[str, str]:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    dsn = _with_database(admin_dsn, DATABASE)
    await migrate(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await connection.execute(LOAD_TASKS, tasks)
        print(f"loaded {tasks} tasks in {time.monotonic() - started:.1f} s", file=sys.stderr)
        await connection.execute("VACUUM ANALYZE tasks")
        user_id = "b" * 24
        token = new_token()
        await connection.execute("INSERT INTO users (id, email, password_hash, permissions) VALUES ($1, $2, 'x', $3)",
                                 user_id, "bench@example.com", list(ALL_PERMISSIONS))
        await connection.execute(
            "INSERT INTO tokens (id, user_id, access_token_hash, access_expires_at) "
            "VALUES ($1, $2, $3, now() + interval '1 day')", "c" * 24, user_id, token_digest(token))
    finally:
        await connection.close()
    return dsn, token


def _start_server(dsn: str, port: int, state_dir: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKSERVICE_")}
    env.update({"TASKSERVICE_DATABASE_URL": dsn, "TASKSERVICE_HTTP_PORT": str(port), "TASKSERVICE_LOG_LEVEL": "WARNING",
                "TASKSERVICE_STATE_DIR": str(state_dir), "TASKSERVICE_LOG_FORMAT": "text"})
    return subprocess.Popen([sys.executable, "-m", "taskservice.cli", "run", "--role", "http"], env=env, cwd=ROOT)


class _Client:
    """One keep-alive HTTP/1.1 connection with http.client, whose own cost is small beside httpx's."""

    def __init__(self, port: int, token: str) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body)
        self._connection.request(method, path, body=payload, headers=self._headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path} returned HTTP {response.status}: {data[:300]!r}")
        return response.status, json.loads(data) if data else None


def _wait_ready(port: int) -> None:
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the HTTP server did not start within 30 s")


def _bench_execute(client: _Client, requests: int, max_seconds: float) -> dict[str, Any]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", NOOP)
    body = {"name": "noop", "code": base64.b64encode(buffer.getvalue()).decode(), "entryPoint": "handler.handle",
            "runtime": f"python{sys.version_info.major}.{sys.version_info.minor}", "timeLimit": 10}
    client.request("POST", "/tasks/v1/functions", body)
    for _ in range(200):
        client.request("POST", "/tasks/v1/functions/noop/execute", {})
    overheads, round_trips = [], []
    deadline = time.monotonic() + max_seconds
    for _ in range(requests):
        started = time.perf_counter()
        _status, task = client.request("POST", "/tasks/v1/functions/noop/execute", {"data": {}})
        elapsed = time.perf_counter() - started
        round_trips.append(elapsed)
        overheads.append(elapsed - task["duration"])
        if time.monotonic() > deadline:
            break
    return {"overhead": _percentiles(overheads), "round_trip": _percentiles(round_trips)}


def _bench_lists(client: _Client, requests: int, max_seconds: float) -> dict[str, Any]:
    results = {}
    for label, query in QUERIES.items():
        for _ in range(50):
            client.request("GET", f"/tasks/v1/{query}")
        samples: list[float] = []
        deadline = time.monotonic() + max_seconds
        for _ in range(requests):
            started = time.perf_counter()
            _status, body = client.request("GET", f"/tasks/v1/{query}")
            samples.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                break
        results[label] = {**_percentiles(samples), "total": body["page"].get("total"), "rows": len(body["data"])}
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--tasks", type=int, default=1_000_000, help="rows to load (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=2_000, help="measured requests per case (default 2,000)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound of each measured loop")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    parser.add_argument("--execute-only", action="store_true", help="measure direct execution only, not task lists")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "api.json",
                        help="file the JSON summary is written to (default bench/results/api.json)")
    args = parser.parse_args()

    dsn, token = await _prepare_database(args.database_url, args.tasks)
    port = _free_port()
    state_dir = ROOT / ".state" / "api-bench"
    server = _start_server(dsn, port, state_dir)
    try:
        _wait_ready(port)
        client = _Client(port, token)
        execute = _bench_execute(client, args.requests, args.max_seconds)
        lists = None if args.execute_only else _bench_lists(client, min(args.requests, 1_000), args.max_seconds)
    finally:
        server.terminate()
        server.wait(30)
        if not args.keep:
            admin = await asyncpg.connect(args.database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await admin.close()
    summary = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
               "tasks": args.tasks, "direct_execution": execute, "list_tasks": lists}
    print(json.dumps(summary, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
