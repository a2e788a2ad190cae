"""Event to function start at fixed rates, with ingest, worker and relay running as in production.

The three roles run as separate `taskservice run --role …` processes. Events of 1 KB are
published one record at a time (linger 0 ms) at each --rates value for --seconds seconds.
Each matches one of 100 dispatchers and creates one no-op task. Latency is the task's
`started_timestamp` minus the time just before the record went to the producer, both
from this machine's clock. It splits at the task's `creation_timestamp` (the start of
the insert transaction) into publish → task row and task row → start.

A warm-up of 100 events goes first and counts for nothing: the ingest consumer has
joined its group and the runtime process is warm when measuring starts.

    .venv/bin/python bench/latency.py --rates 100 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from common import machine, start_roles, stop
from events import database_name, event_pipeline, publish_at_rate
from procstat import CpuMeter, Labeller
from profiling import PySpyRecorder
from report import summarise_ms

ROLES = ("ingest", "worker", "relay")
WARM_UP_EVENTS = 100
DRAIN_TIMEOUT_S = 120.0

_STARTED = """
SELECT event_id, extract(epoch FROM started_timestamp) AS started, extract(epoch FROM creation_timestamp) AS created
FROM tasks WHERE event_id = ANY($1::text[]) AND status = 'complete'
"""


async def _wait_for_starts(connection: asyncpg.Connection, event_ids: list[str]) -> list[asyncpg.Record]:
    """Wait until the task of every event has run and return their times."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        rows = await connection.fetch(_STARTED, event_ids)
        if len(rows) >= len(event_ids):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(rows)} of {len(event_ids)} tasks ran within {DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.2)


def _latencies(published: dict[str, float], rows: list[asyncpg.Record]) -> dict[str, Any]:
    to_start = [(float(row["started"]) - published[row["event_id"]]) * 1000 for row in rows]
    to_row = [(float(row["created"]) - published[row["event_id"]]) * 1000 for row in rows]
    row_to_start = [(float(row["started"]) - float(row["created"])) * 1000 for row in rows]
    return {"events": len(rows), "event_to_start_ms": summarise_ms(to_start),
            "event_to_task_row_ms": summarise_ms(to_row), "task_row_to_start_ms": summarise_ms(row_to_start)}


async def run(rates: list[float], seconds: float, profile_dir: Path | None = None) -> dict[str, Any]:
    """Measure event-to-start latency at each rate in turn, on one set of role processes.

    With profile_dir, py-spy records the three roles during the last rate.
    """
    run_id = uuid.uuid4().hex[:12]
    results: dict[str, Any] = {}
    async with event_pipeline() as (settings, topic):
        processes = {role: start_roles(settings, role) for role in ROLES}
        labeller = Labeller(database=database_name(settings),
                            roles={process.pid: role for role, process in processes.items()})
        assert settings.database_url is not None
        connection = await asyncpg.connect(settings.database_url)
        try:
            warm_up = await publish_at_rate(settings, topic, run_id, 0, WARM_UP_EVENTS / 2, 2)
            await _wait_for_starts(connection, list(warm_up))
            first = len(warm_up)
            for rate in rates:
                meter = CpuMeter(labeller)
                profiler = PySpyRecorder(profile_dir) if profile_dir and rate == rates[-1] else None
                meter.start()
                if profiler is not None:
                    profiler.start({f"latency-{rate:g}-{role}": process.pid for role, process in processes.items()})
                published = await publish_at_rate(settings, topic, run_id, first, rate, seconds)
                rows = await _wait_for_starts(connection, list(published))
                results[f"{rate:g}_per_s"] = {"rate_per_s": rate, "seconds": seconds,
                                              **_latencies(published, rows), "cpu": meter.stop()}
                if profiler is not None:
                    results[f"{rate:g}_per_s"]["profiles"] = profiler.stop()
                first += len(published)
        finally:
            await connection.close()
            for process in processes.values():
                stop(process)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0], help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of publishing per rate")
    args = parser.parse_args()
    result = await run(args.rates, args.seconds)
    print(json.dumps({"machine": machine(), "time": datetime.now(UTC).isoformat(), "latency": result}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
