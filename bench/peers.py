"""The same no-op job through two PostgreSQL job queues, pgqueuer and procrastinate.

Each queue gets a database of its own on the same server. N jobs are enqueued first, then
the worker processes start and drain the queue. The span runs from the first job taken to
the last job finished, on the database clock, so process start-up is left out as in
exec_throughput.py. pgqueuer records both in its log table (`picked` and `successful`
rows), procrastinate in its events table (`started` and `succeeded`). Settings are the
ones each project gives for throughput: pgqueuer with 2 worker processes that claim 500
jobs per query, procrastinate's worker with asynchronous jobs and `concurrency`.

    .venv/bin/python bench/peers.py --jobs 100000 --procrastinate-jobs 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

from common import fresh_database, stop
from procstat import CpuMeter, Labeller

PGQUEUER_BATCH_SIZE = 500
PGQUEUER_WORKERS = 2
PROCRASTINATE_CONCURRENCY = 20
PROCRASTINATE_WORKERS = 2
ENQUEUE_CHUNK = 10_000
DRAIN_TIMEOUT_S = 600.0
DRAINED = b"drained"


def _start_worker(queue: str, dsn: str, option: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker", queue, dsn, str(option)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _drain_workers(processes: list[subprocess.Popen[bytes]], meter: CpuMeter, timeout_s: float) -> dict[str, Any]:
    """Wait until every worker has drained the queue, read the CPU meter, then let the workers exit.

    A worker prints DRAINED and keeps its process and connections until its standard input
    closes, so that the meter still sees the workers and their PostgreSQL backends.
    """
    deadline = time.monotonic() + timeout_s
    try:
        for process in processes:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready or process.stdout.readline().strip() != DRAINED:
                _out, err = process.communicate(timeout=10) if process.poll() is not None else (b"", b"")
                raise RuntimeError(f"a worker did not drain the queue within {timeout_s:.0f} s "
                                   f"(exit code {process.poll()}): {err.decode()[-2000:]}")
        return meter.stop()
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                stop(process)


async def _hold_until_stdin_closes() -> None:
    print(DRAINED.decode(), flush=True)
    await asyncio.to_thread(sys.stdin.read)


# pgqueuer --------------------------------------------------------------------------------

async def _pgqueuer_enqueue(dsn: str, jobs: int) -> float:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        await queries.install()
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_CHUNK):
            count = min(ENQUEUE_CHUNK, jobs - offset)
            await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def _pgqueuer_worker(dsn: str, batch_size: int) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(dsn)
    queuer = PgQueuer(AsyncpgDriver(connection))

    @queuer.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    await queuer.qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    await _hold_until_stdin_closes()
    await connection.close()


# Both queues record when each job was taken and when it finished, on the database clock.
PGQUEUER_SPAN = """
SELECT min(created) FILTER (WHERE status = 'picked') AS first,
       max(created) FILTER (WHERE status = 'successful') AS last,
       count(*) FILTER (WHERE status = 'successful') AS done
FROM pgqueuer_log
"""


async def run_pgqueuer(jobs: int, workers: int = PGQUEUER_WORKERS,
                       batch_size: int = PGQUEUER_BATCH_SIZE) -> dict[str, Any]:
    """Enqueue jobs, drain them with pgqueuer worker processes and return the rate."""
    return await _measure_drain("pgqueuer", _pgqueuer_enqueue, jobs, workers, batch_size, PGQUEUER_SPAN,
                                {"worker_processes": workers, "batch_size": batch_size})


# procrastinate ---------------------------------------------------------------------------

def _procrastinate_app(dsn: str) -> Any:
    from procrastinate import App, PsycopgConnector

    # procrastinate warns about an App defined in the __main__ module because workers
    # import tasks by module path. Here the worker defines the same task itself.
    warnings.filterwarnings("ignore", message="App is instantiated in the main Python module")
    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def _procrastinate_enqueue(dsn: str, jobs: int) -> float:
    app = _procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_CHUNK):
            await app.tasks["noop"].batch_defer_async(*({} for _ in range(min(ENQUEUE_CHUNK, jobs - offset))))
        return time.perf_counter() - started


async def _procrastinate_worker(dsn: str, concurrency: int) -> None:
    app = _procrastinate_app(dsn)
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
        await _hold_until_stdin_closes()


PROCRASTINATE_SPAN = """
SELECT min(at) FILTER (WHERE type = 'started') AS first,
       max(at) FILTER (WHERE type = 'succeeded') AS last,
       count(*) FILTER (WHERE type = 'succeeded') AS done
FROM procrastinate_events
"""


async def run_procrastinate(jobs: int, workers: int = PROCRASTINATE_WORKERS,
                            concurrency: int = PROCRASTINATE_CONCURRENCY) -> dict[str, Any]:
    """Enqueue jobs, drain them with procrastinate worker processes and return the rate."""
    return await _measure_drain("procrastinate", _procrastinate_enqueue, jobs, workers, concurrency,
                                PROCRASTINATE_SPAN, {"worker_processes": workers, "concurrency": concurrency})


async def _measure_drain(queue: str, enqueue: Callable[[str, int], Awaitable[float]], jobs: int, workers: int,
                         worker_option: int, span_query: str, settings: dict[str, int]) -> dict[str, Any]:
    async with fresh_database(migrated=False) as dsn:
        enqueue_s = await enqueue(dsn, jobs)
        labeller = Labeller(database=dsn.rsplit("/", 1)[1])
        meter = CpuMeter(labeller)
        meter.start()
        processes = [_start_worker(queue, dsn, worker_option) for _ in range(workers)]
        labeller.roles = {process.pid: f"{queue} worker" for process in processes}
        # Unlike the span, the meter covers the workers' start-up too (imports, connections).
        cpu = _drain_workers(processes, meter, DRAIN_TIMEOUT_S)
        connection = await asyncpg.connect(dsn)
        try:
            row = await connection.fetchrow(span_query)
        finally:
            await connection.close()
    if row["done"] != jobs:
        raise RuntimeError(f"{queue} finished {row['done']} of {jobs} jobs")
    span = (row["last"] - row["first"]).total_seconds()
    return {"queue": queue, "version": version(queue), "jobs": jobs, **settings,
            "enqueue_seconds": round(enqueue_s, 3), "seconds": round(span, 3), "jobs_per_s": round(jobs / span),
            "cpu_from_worker_start": cpu}


# Command line ----------------------------------------------------------------------------

async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="pgqueuer jobs (default 100,000)")
    parser.add_argument("--procrastinate-jobs", type=int, default=10_000, help="procrastinate jobs (default 10,000)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=PROCRASTINATE_CONCURRENCY)
    parser.add_argument("--procrastinate-workers", type=int, default=PROCRASTINATE_WORKERS)
    args = parser.parse_args()
    results = [await run_pgqueuer(args.jobs),
               await run_procrastinate(args.procrastinate_jobs, args.procrastinate_workers,
                                       args.procrastinate_concurrency)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        queue, dsn, option = sys.argv[2], sys.argv[3], int(sys.argv[4])
        worker = _pgqueuer_worker if queue == "pgqueuer" else _procrastinate_worker
        asyncio.run(worker(dsn, option))
    else:
        asyncio.run(main())
