"""Delayed-start precision: how late a task starts after its startTimestamp.

Creates --rate delayed tasks per second for --seconds seconds, each due 2 s after its
creation, with one worker and relay running, then reports started − startTimestamp.

    .venv/bin/python bench/delayed_start.py --rate 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from common import bench_settings, broker, fresh_database, machine, start_roles, stop, wait_until
from report import percentile
from taskservice.admin import register_functions
from taskservice.ids import new_object_id
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository

DELAY_S = 2.0


async def run(rate: float, seconds: float, bootstrap: str, is_tansu: bool) -> dict[str, object]:
    async with fresh_database() as dsn:
        settings = bench_settings(dsn, bootstrap, is_tansu)
        await register_functions(settings, settings.functions_dir)
        worker = start_roles(settings, "worker")
        pool = await create_pool(dsn, size=2, role="bench")
        try:
            async def ready() -> bool:
                return bool(await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE 'taskservice-worker%'"))
            await wait_until(ready, timeout=60)
            repository = Repository(pool)
            total = int(rate * seconds)
            started = time.monotonic()
            for index in range(total):
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                due = datetime.now(UTC) + timedelta(seconds=DELAY_S)
                await repository.insert_tasks([{
                    "id": new_object_id(), "function_name": "noop", "data": {}, "tags": [], "priority": None,
                    "start_timestamp": due.isoformat(), "idempotency_key": None, "source": "api",
                    "event_id": None, "event_timestamp": None}])

            async def done() -> bool:
                return await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'complete'") == total
            await wait_until(done, timeout=120)
            rows = await pool.fetch("SELECT extract(epoch FROM started_timestamp - start_timestamp) * 1000 AS late_ms "
                                    "FROM tasks ORDER BY start_timestamp")
        finally:
            await pool.close()
            stop(worker)
    late = [float(row["late_ms"]) for row in rows]
    worst = sorted(range(len(late)), key=lambda index: -late[index])[:12]
    print("worst positions:", [(index, round(late[index])) for index in sorted(worst)])
    return {"tasks": len(late), "rate_per_s": rate, "late_p50_ms": round(percentile(late, 0.5), 2),
            "late_p99_ms": round(percentile(late, 0.99), 2), "late_max_ms": round(max(late), 2),
            "early": sum(1 for value in late if value < 0)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with broker() as (bootstrap, is_tansu):
        result = await run(args.rate, args.seconds, bootstrap, is_tansu)
    print(json.dumps({"machine": machine(), "time": datetime.now(UTC).isoformat(), "delayed_start": result}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
