"""No-op tasks end to end: claimed, run in the isolated runtime, completed, result published.

Tasks are inserted with a start time a few seconds ahead, after the worker and relay
processes are up. The measured span runs from the moment they become due to the last
result acknowledged by the broker (`max(outbox.sent_at)`), so process start-up is left out.

    .venv/bin/python bench/exec_throughput.py --tasks 100000 --workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from common import bench_settings, broker, fresh_database, machine, start_roles, stop, wait_until
from procstat import CpuMeter, Labeller
from profiling import PySpyRecorder
from taskservice.admin import register_functions
from taskservice.ids import new_object_id
from taskservice.kafka import ensure_topics
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository

LEAD_TIME_S = 4.0


async def insert_noop_tasks(dsn: str, count: int, start: datetime) -> None:
    pool = await create_pool(dsn, size=2, role="bench")
    try:
        repository = Repository(pool)
        for offset in range(0, count, 5000):
            rows = [{"id": new_object_id(), "function_name": "noop", "data": {}, "tags": [], "priority": None,
                     "start_timestamp": start.isoformat(), "idempotency_key": None, "source": "api",
                     "event_id": None, "event_timestamp": None} for _ in range(min(5000, count - offset))]
            await repository.insert_tasks(rows)
    finally:
        await pool.close()


async def run_once(tasks: int, workers: int, bootstrap: str, is_tansu: bool,
                   profile_dir: Path | None = None) -> dict[str, object]:
    """Run no-op tasks with worker processes, and record py-spy profiles in profile_dir if given."""
    async with fresh_database() as dsn:
        settings = bench_settings(dsn, bootstrap, is_tansu, worker_claim_batch_size=500, worker_max_in_flight=2000,
                                  relay_batch_size=2000, runtime_processes_per_function=2)
        await register_functions(settings, settings.functions_dir)
        await ensure_topics(settings, [settings.results_topic])
        processes = [start_roles(settings, "relay")] + [start_roles(settings, "worker") for _ in range(workers)]
        roles = {processes[0].pid: "relay"} | {process.pid: "worker" for process in processes[1:]}
        meter = CpuMeter(Labeller(database=dsn.rsplit("/", 1)[1], roles=roles))
        profiler = PySpyRecorder(profile_dir) if profile_dir else None
        connection = await asyncpg.connect(dsn)
        try:
            async def ready() -> bool:
                count = await connection.fetchval(
                    "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'taskservice-%'")
                return count >= 2
            await wait_until(ready, timeout=60)
            due = datetime.now(UTC) + timedelta(seconds=LEAD_TIME_S + tasks / 40_000)
            await insert_noop_tasks(dsn, tasks, due)
            await asyncio.sleep(max((due - datetime.now(UTC)).total_seconds(), 0))
            meter.start()
            if profiler is not None:
                profiler.start({f"exec-{workers}w-relay": processes[0].pid}
                               | {f"exec-{workers}w-worker{index}": process.pid
                                  for index, process in enumerate(processes[1:], start=1)})

            async def finished() -> bool:
                pending = await connection.fetchval(
                    "SELECT (SELECT count(*) FROM tasks WHERE status <> 'complete') "
                    "+ (SELECT count(*) FROM outbox WHERE sent_at IS NULL)")
                done = await connection.fetchval("SELECT count(*) FROM outbox")
                return pending == 0 and done == tasks
            await wait_until(finished, timeout=600, interval=0.25)
            cpu = meter.stop()
            profiles = profiler.stop() if profiler is not None else {}
            last_sent = await connection.fetchval("SELECT max(sent_at) FROM outbox")
            last_run = await connection.fetchval("SELECT max(finished_timestamp) FROM tasks")
        finally:
            await connection.close()
            for process in processes:
                stop(process)
    span = (last_sent - due).total_seconds()
    return {"tasks": tasks, "workers": workers, "seconds": round(span, 3),
            "tasks_per_s": round(tasks / span), "run_seconds": round((last_run - due).total_seconds(), 3),
            "cpu": cpu, **({"profiles": profiles} if profiles else {})}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with broker() as (bootstrap, is_tansu):
        results = [await run_once(args.tasks, workers, bootstrap, is_tansu) for workers in args.workers]
    print(json.dumps({"machine": machine(), "time": datetime.now(UTC).isoformat(), "runs": results}, indent=2))


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
