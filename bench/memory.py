"""Resident memory of each role process over a long run: 1 million small events end to end.

Ingest, worker and relay run as separate `taskservice run --role …` processes. The
events (160 bytes each, one match each) are published at --rate events a second while
the roles run, and the run ends when every task is complete and every result published.
The default rate is about what the three roles sustain on 2 cores beside PostgreSQL and
the broker, so the run takes about 10 minutes. Published as one burst, the events leave
a backlog of most of a million tasks, and on a server without autovacuum each claim
then scans that backlog, so the run no longer fits the suite's time.

A thread reads the RSS of the role processes and of the worker's runtime processes from
/proc every second. A role is flat when the peak of the last quarter of the run is at
most 10 % (or 5 MB) above the peak of the first quarter.

    .venv/bin/python bench/memory.py --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from common import machine, start_roles, stop
from events import SMALL_EVENT_BYTES, database_name, event_pipeline, produce
from procstat import CpuMeter, Labeller, RssSampler
from report import rss_trend

ROLES = ("ingest", "worker", "relay")
PROGRESS_POLL_S = 5.0
RATE_PER_S = 2_500.0

_PROGRESS = """
SELECT (SELECT count(*) FROM tasks WHERE status = 'complete') AS complete,
       (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent
"""


async def _wait_until_done(connection: asyncpg.Connection, events: int, timeout_s: float,
                           progress: list[tuple[float, int, int]]) -> dict[str, int]:
    """Poll until every task is complete and published, noting (seconds, complete, unsent) in progress."""
    started = time.monotonic()
    while True:
        row = await connection.fetchrow(_PROGRESS)
        progress.append((round(time.monotonic() - started), row["complete"], row["unsent"]))
        if (row["complete"] >= events and row["unsent"] == 0) or time.monotonic() - started > timeout_s:
            return dict(row)
        await asyncio.sleep(PROGRESS_POLL_S)


async def run(events: int, rate: float, timeout_s: float) -> dict[str, Any]:
    """Run events through ingest, worker and relay, and return the peak RSS per role and whether it stays flat."""
    run_id = uuid.uuid4().hex[:12]
    async with event_pipeline() as (settings, topic):
        processes = {role: start_roles(settings, role) for role in ROLES}
        labeller = Labeller(database=database_name(settings),
                            roles={process.pid: role for role, process in processes.items()})
        sampler = RssSampler(labeller)
        meter = CpuMeter(labeller)
        assert settings.database_url is not None
        connection = await asyncpg.connect(settings.database_url)
        try:
            sampler.start()
            meter.start()
            started = time.monotonic()
            trace: list[tuple[float, int, int]] = []
            waiter = asyncio.create_task(_wait_until_done(connection, events, timeout_s, trace))
            produced = await produce(settings, topic, run_id, events, SMALL_EVENT_BYTES, rate)
            progress = await waiter
            elapsed = time.monotonic() - started
            cpu = meter.stop()
        finally:
            sampler.stop()
            await connection.close()
            for process in processes.values():
                stop(process)
    if progress["complete"] < events or progress["unsent"]:
        raise RuntimeError(f"memory run timed out after {timeout_s:.0f} s: {progress['complete']} of {events} "
                           f"tasks complete, {progress['unsent']} results not published")
    trend = rss_trend(sampler.samples)
    roles = {label: trend[label] for label in ("ingest", "worker", "worker runtime", "relay") if label in trend}
    return {"events": events, "event_bytes": SMALL_EVENT_BYTES, "produce": produced, "seconds": round(elapsed, 1),
            "events_per_s_end_to_end": round(events / elapsed), "samples": len(sampler.samples),
            "progress_seconds_complete_unsent": trace,
            "roles": roles, "peak_rss_mb": max(item["peak_mb"] for item in roles.values()),
            "all_flat": all(item["flat"] for item in roles.values()), "cpu": cpu}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=RATE_PER_S, help=f"events per second (default {RATE_PER_S:g})")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the run may take")
    args = parser.parse_args()
    result = await run(args.events, args.rate, args.timeout)
    print(json.dumps({"machine": machine(), "time": datetime.now(UTC).isoformat(), "memory": result}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
